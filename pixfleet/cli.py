"""The ``pixfleet`` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from pipeline.transform.presets import DEFAULT_PRESET
from pixfleet.images import images
from pixfleet.bench import bench
from pixfleet.chaos import chaos
from pixfleet.demo import demo
from pixfleet.dlq import dlq
from pixfleet.loadtest import load
from pixfleet.fleet import COMMANDS as ORCHESTRATOR_COMMANDS

console = Console(stderr=True)
STATE_DIR = Path(os.environ.get("PIXFLEET_STATE_DIR", ".pixfleet"))


def load_stack(state_dir: Path = STATE_DIR) -> dict[str, Any]:
    """The running stack's ``stack.json`` (written by ``pixfleet up``)."""
    path = state_dir / "stack.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise click.ClickException(
            f"no running stack: {path} not found (start one with `pixfleet up`, or pass --api)"
        ) from None


def _api_url(api: str | None) -> str:
    return (api or load_stack()["api_url"]).rstrip("/")


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
def main(verbose: bool) -> None:
    """pixfleet — an ECS-style batch image pipeline on one laptop."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@main.command()
@click.option("--workers", default=1, show_default=True, help="Minimum worker tasks (autoscaling floor).")
@click.option("--max-workers", default=4, show_default=True, help="Autoscaling ceiling of the worker service.")
@click.option("--port", default=8080, show_default=True, help="API port (0 picks a free one).")
@click.option("--host", default="127.0.0.1", show_default=True, help="API bind address.")
@click.option("--state-dir", type=click.Path(path_type=Path), default=STATE_DIR, show_default=True)
@click.option("--max-receive-count", default=3, show_default=True, help="Deliveries before a message goes to the DLQ.")
def up(workers: int, max_workers: int, port: int, host: str, state_dir: Path, max_receive_count: int) -> None:
    """Start the embedded stack: emulator, orchestrator, and the API and worker services as local processes.

    Ctrl-C drains the workers and stops everything.
    """
    from infra.stack import StackSpec
    from pixfleet.stack import EmbeddedConfig, EmbeddedStack

    config = EmbeddedConfig(
        state_dir=state_dir,
        workers=workers,
        max_workers=max_workers,
        api_port=port,
        api_host=host,
        spec=StackSpec(max_receive_count=max_receive_count),
    )

    async def run() -> None:
        stack = EmbeddedStack(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        with console.status("starting emulator, provisioning, launching tasks…"):
            async with stack:
                _print_stack(stack.stack_info(), state_dir)
                await stop.wait()
                console.print("[bold]stopping…[/] (draining workers)")
        console.print("stopped.")

    asyncio.run(run())


def _print_stack(info: dict[str, Any], state_dir: Path) -> None:
    table = Table(title="pixfleet is up", show_header=False, title_justify="left")
    table.add_row("API", info["api_url"])
    table.add_row("emulator (moto)", info["aws_endpoint_url"])
    table.add_row("input bucket", info["input_bucket"])
    table.add_row("output bucket", info["output_bucket"])
    table.add_row("job queue", info["queue_url"])
    table.add_row("orchestrator", info["orchestrator_url"])
    table.add_row("logs", f"{info['logs']} (tasks: {info['task_logs']})")
    table.add_row("stack file", str(state_dir / "stack.json"))
    console.print(table)
    console.print(f'try: curl -F file=@photo.jpg "{info["api_url"]}/v1/images?preset=web"')
    console.print("     pixfleet status · pixfleet events -f · Ctrl-C to stop")


@main.command()
@click.option("--endpoint-url", envvar="AWS_ENDPOINT_URL", help="moto/LocalStack URL; omit for real AWS.")
@click.option("--region", envvar="AWS_REGION", default="us-east-1", show_default=True)
@click.option("--max-receive-count", default=3, show_default=True)
@click.option("--visibility-timeout", default=60, show_default=True)
def provision(endpoint_url: str | None, region: str, max_receive_count: int, visibility_timeout: int) -> None:
    """Apply the stack (buckets, queues, notification, roles) idempotently; print its outputs as JSON."""
    from infra.provision import provision as apply
    from infra.stack import StackSpec

    spec = StackSpec(max_receive_count=max_receive_count, visibility_timeout=visibility_timeout)
    with console.status(f"provisioning {endpoint_url or 'AWS'}…"):
        outputs = asyncio.run(apply(endpoint_url, region, spec))
    click.echo(json.dumps(outputs.to_dict(), indent=2))


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--preset", default=DEFAULT_PRESET, show_default=True)
@click.option("--wait/--no-wait", default=False, help="Wait for the jobs to finish.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Download outputs here (implies --wait).")
@click.option("--api", help="API base URL (default: the running stack's).")
@click.option("--concurrency", default=4, show_default=True)
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for the jobs.")
def submit(
    files: tuple[Path, ...],
    preset: str,
    wait: bool,
    out: Path | None,
    api: str | None,
    concurrency: int,
    timeout: float,
) -> None:
    """Upload FILES through the HTTP API; optionally wait and download the outputs."""
    from pixfleet.client import submit_files

    results = asyncio.run(
        submit_files(
            _api_url(api),
            list(files),
            preset=preset,
            wait=wait or out is not None,
            out=out,
            concurrency=concurrency,
            timeout=timeout,
            console=console,
        )
    )
    click.echo(json.dumps(results, indent=2))
    waited = wait or out is not None
    if any((r.get("status") != "succeeded") if waited else ("job_id" not in r) for r in results):
        sys.exit(1)


for _command in ORCHESTRATOR_COMMANDS:
    main.add_command(_command)
main.add_command(bench)
main.add_command(images)
main.add_command(load)
main.add_command(demo)
main.add_command(dlq)
main.add_command(chaos)


if __name__ == "__main__":
    main()
