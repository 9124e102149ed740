"""``pixfleet up | down | env | provision`` — start, stop and reach the stack.

``up`` runs the embedded stack in the foreground (Ctrl-C stops it) or, with ``--detach``, in a
background process of its own. Either way the process that owns the stack is recorded in
``stack.json`` (pid and start time), and ``down`` sends it SIGTERM — the same as Ctrl-C: the
workers drain, the tasks stop, the emulator stops, ``stack.json`` goes — and follows it until it
has exited. ``env`` prints the shell exports that point the AWS CLI (and boto3, and the pixfleet
tools) at the running stack.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from pixfleet.endpoints import (
    is_stale,
    read_stack,
    require_stack,
    stack_path,
    stack_process,
    state_dir as default_state_dir,
)
from pixfleet.orchestrator_client import OrchestratorClient, OrchestratorError
from pixfleet.processes import ProcessRecord

err = Console(stderr=True)

STOP_TIMEOUT = 90.0  # the orchestrator gives its tasks up to 60 s; then the emulator stops
DETACH_TIMEOUT = 180.0

state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_state_dir,
    show_default=".pixfleet, or $PIXFLEET_STATE_DIR",
    help="Where the stack keeps stack.json, logs and the orchestrator's state.",
)


# --- up ----------------------------------------------------------------------------------------


def port_in_use(host: str, port: int) -> bool:
    """Something already listens on ``host:port`` (checked as the API will bind: with SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _refuse_a_second_stack(state_dir: Path) -> None:
    stack = read_stack(state_dir)
    if stack is None:
        return
    owner = stack_process(stack)
    if owner is None or is_stale(stack):
        return  # stale (or from an older pixfleet): this start overwrites it
    raise click.ClickException(
        f"a stack is already running from {state_dir} ({owner.describe()}, API {stack.get('api_url')}): "
        "use it, stop it with `pixfleet down`, or pass another --state-dir"
    )


@click.command()
@click.option("--workers", default=1, show_default=True, help="Worker tasks at start, and the autoscaling floor.")
@click.option("--max-workers", default=4, show_default=True, help="Autoscaling ceiling of the worker service.")
@click.option("--port", default=8080, show_default=True, help="API port on the host; 0 picks a free one.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the API listens on.")
@state_dir_option
@click.option("--max-receive-count", default=3, show_default=True, help="Deliveries before a message goes to the DLQ.")
@click.option(
    "--detach", "-d", is_flag=True, help="Run in the background; return once it is up (`pixfleet down` stops it)."
)
def up(
    workers: int, max_workers: int, port: int, host: str, state_dir: Path, max_receive_count: int, detach: bool
) -> None:
    """Start the embedded stack: emulator, orchestrator, and the API and worker services as local processes.

    In the foreground, Ctrl-C (or `pixfleet down` from another terminal) drains the workers and
    stops everything.
    """
    _refuse_a_second_stack(state_dir)
    if port and port_in_use(host, port):
        raise click.ClickException(
            f"port {port} on {host} is in use (another stack? `pixfleet status`): "
            "pick another with --port, or --port 0 for a free one"
        )
    if max_workers < workers:
        raise click.UsageError(f"--max-workers {max_workers} is below --workers {workers}")
    if detach:
        args = ["--workers", str(workers), "--max-workers", str(max_workers), "--port", str(port), "--host", host]
        args += ["--state-dir", str(state_dir), "--max-receive-count", str(max_receive_count)]
        info = _start_detached(args, state_dir)
        _print_stack(info, state_dir, detached=True)
        return
    _run_foreground(workers, max_workers, port, host, state_dir, max_receive_count)


def _run_foreground(
    workers: int, max_workers: int, port: int, host: str, state_dir: Path, max_receive_count: int
) -> None:
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
        try:
            with err.status("starting emulator, provisioning, launching tasks…"):
                await stack.start()
            _print_stack(stack.stack_info(), state_dir, detached=False)
            if stack.applied:
                err.print("applied infra/ecs through the ECS API:", highlight=False)
                for line in stack.applied:
                    err.print(f"  {line}", highlight=False)
            await stop.wait()
            err.print("[bold]stopping…[/] (draining workers)")
        finally:
            await stack.stop()
        err.print("stopped.")

    asyncio.run(run())


def _start_detached(args: list[str], state_dir: Path) -> dict[str, Any]:
    """Start ``pixfleet up ARGS`` in its own session, logging to the state dir; its stack.json once it is up."""
    log_path = state_dir / "logs" / "up.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "pixfleet", "up", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not stopped by the terminal's Ctrl-C or hang-up
        )
    deadline = time.monotonic() + DETACH_TIMEOUT
    with err.status(f"starting the stack in the background (pid {child.pid}, log {log_path})…"):
        while True:
            stack = read_stack(state_dir)
            owner = stack_process(stack) if stack else None
            if stack is not None and owner is not None and owner.pid == child.pid:
                return stack
            code = child.poll()
            if code is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise click.ClickException(f"`pixfleet up` exited with status {code} while starting:\n{tail}")
            if time.monotonic() > deadline:
                child.terminate()
                raise click.ClickException(f"the stack was not up after {DETACH_TIMEOUT:.0f}s; see {log_path}")
            time.sleep(0.2)


def _print_stack(info: dict[str, Any], state_dir: Path, *, detached: bool) -> None:
    owner = stack_process(info)
    title = "pixfleet is up" + (f" ({owner.describe()})" if owner else "")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    api = info["api_url"]
    grid.add_row("API", f"{api}  (upload page: {api}/)")
    grid.add_row(
        "control plane",
        f"{info.get('ecs_endpoint_url') or info['orchestrator_url']}  (ECS + Application Auto Scaling: "
        '`eval "$(pixfleet env)"; aws ecs list-services`)',
    )
    balancer = info.get("load_balancer")
    grid.add_row(
        "load balancer",
        f"HAProxy (pid {balancer['pid']}) in front of the API tasks"
        if balancer
        else "none: the API is one task (apt-get install haproxy for two behind one)",
    )
    grid.add_row("emulator", f"{info['aws_endpoint_url']}  (moto; admin keys: `pixfleet env`)")
    grid.add_row("buckets", f"{info['input_bucket']} → {info['output_bucket']}")
    grid.add_row("job queue", info["queue_url"])
    if info.get("taskdefs"):
        grid.add_row("task definitions", f"{info['taskdefs']}/")
    grid.add_row("logs", f"{info['logs']}/ (tasks: {info['task_logs']}/)")
    grid.add_row("stack file", str(stack_path(state_dir)))
    err.print(f"[bold green]{title}[/]")
    err.print(grid)
    err.print(f'try:  curl -F file=@photo.jpg "{api}/v1/images?preset=web"', highlight=False)
    err.print("      pixfleet submit photos/ --out out/ · pixfleet status · pixfleet events -f", highlight=False)
    err.print('      eval "$(pixfleet env)" && aws s3 ls   (the AWS CLI, against the emulator)', highlight=False)
    err.print("stop: pixfleet down" if detached else "stop: Ctrl-C here, or `pixfleet down` from another terminal")


# --- down --------------------------------------------------------------------------------------


@click.command()
@state_dir_option
@click.option(
    "--timeout",
    default=STOP_TIMEOUT,
    show_default=True,
    help="Seconds to wait for the stack to drain and exit before giving up.",
)
def down(state_dir: Path, timeout: float) -> None:
    """Stop the stack that `pixfleet up` runs (in the background, or in another terminal).

    It gets SIGTERM, as with Ctrl-C: the workers finish their jobs, the tasks stop, then the
    emulator. `down` follows it until the process has exited.
    """
    path = stack_path(state_dir)
    stack = read_stack(state_dir)
    if stack is None:
        err.print(f"nothing to stop: no stack is running from {state_dir} ({path} not found)", highlight=False)
        return
    owner = stack_process(stack)
    if owner is None:
        raise click.ClickException(
            f"{path} does not record which process runs the stack (an older pixfleet wrote it): "
            "stop it with Ctrl-C where it runs"
        )
    if not owner.alive():
        _clean_up_stale(stack, path, owner, timeout)
        return
    started = time.monotonic()
    err.print(f"stopping the stack ({owner.describe()}): SIGTERM", highlight=False)
    os.kill(owner.pid, signal.SIGTERM)
    client = OrchestratorClient.from_stack(stack, timeout=1)
    if not asyncio.run(_follow_shutdown(owner, client, timeout)):
        raise click.ClickException(
            f"the stack ({owner.describe()}) is still stopping after {timeout:.0f}s; wait, or `kill -KILL {owner.pid}`"
        )
    if path.exists() and stack_process(read_stack(state_dir) or {}) == owner:
        path.unlink()  # it died before it could remove its own
    err.print(f"stopped in {time.monotonic() - started:.1f}s.")


async def _follow_shutdown(owner: ProcessRecord, client: OrchestratorClient, timeout: float) -> bool:
    """Until ``owner`` has exited (True) or ``timeout`` passed (False), saying what it is doing as it changes."""
    deadline = time.monotonic() + timeout
    said = ""
    with err.status("draining…") as spinner:
        while owner.alive():
            if time.monotonic() > deadline:
                return False
            phase = await _shutdown_phase(client)
            spinner.update(f"{phase} ({time.monotonic() - deadline + timeout:.0f}s)")
            if phase != said:
                err.print(f"  {phase}", highlight=False)
                said = phase
            await asyncio.sleep(0.3)
    return True


async def _shutdown_phase(client: OrchestratorClient) -> str:
    try:
        tasks = await client.tasks(status=None)
    except OrchestratorError:
        return "tasks stopped; stopping the emulator"
    live = [t for t in tasks if t.get("lastStatus") != "STOPPED"]
    if not live:
        return "tasks stopped; stopping the orchestrator"
    by_service: dict[str, int] = {}
    for t in live:
        by_service[t.get("service") or "run-task"] = by_service.get(t.get("service") or "run-task", 0) + 1
    counts = ", ".join(f"{name} {n}" for name, n in sorted(by_service.items()))
    return f"draining: {len(live)} task{'s' if len(live) != 1 else ''} still running ({counts})"


def _clean_up_stale(stack: dict[str, Any], path: Path, owner: ProcessRecord, timeout: float) -> None:
    """The owner is gone (killed, say): stop its orchestrator if that outlived it, then remove stack.json."""
    from services.orchestrator.process_runtime import pid_alive

    orchestrator = stack.get("orchestrator_process") or {}
    pid, task_id = orchestrator.get("pid"), orchestrator.get("task_id")
    if isinstance(pid, int) and pid_alive(pid, task_id):
        err.print(
            f"the process that ran the stack ({owner.describe()}) is gone, but its orchestrator (pid {pid}) "
            "still runs: stopping it (it drains its tasks)",
            highlight=False,
        )
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        with err.status("waiting for the orchestrator to stop its tasks…"):
            while pid_alive(pid, task_id):
                if time.monotonic() > deadline:
                    raise click.ClickException(f"the orchestrator (pid {pid}) still runs after {timeout:.0f}s")
                time.sleep(0.2)
    path.unlink(missing_ok=True)
    err.print(
        f"no stack was running: {path} was stale (the process that wrote it, {owner.describe()}, is gone); removed it.",
        highlight=False,
    )


# --- env ---------------------------------------------------------------------------------------


def env_exports(stack: dict[str, Any], state_dir: Path) -> Iterator[tuple[str, str]]:
    """The variables that point the AWS CLI, boto3 and the pixfleet tools at a running stack."""
    keys = stack["bootstrap_credentials"]
    yield "AWS_ENDPOINT_URL", stack["aws_endpoint_url"]
    if stack.get("ecs_endpoint_url"):  # the orchestrator, once it answers the ECS API
        yield "AWS_ENDPOINT_URL_ECS", stack["ecs_endpoint_url"]
        yield "AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING", stack["ecs_endpoint_url"]
    yield "AWS_REGION", stack["region"]
    yield "AWS_DEFAULT_REGION", stack["region"]
    yield "AWS_ACCESS_KEY_ID", keys["access_key_id"]
    yield "AWS_SECRET_ACCESS_KEY", keys["secret_access_key"]
    yield "PIXFLEET_API_URL", stack["api_url"]
    yield "PIXFLEET_STATE_DIR", str(state_dir.resolve())


def control_plane_exports(url: str, token: str, region: str) -> Iterator[tuple[str, str]]:
    """``aws ecs`` / ``aws application-autoscaling`` against a control plane known by its URL and admin token
    (the compose stack's): its endpoint and the admin key pair the token stands for."""
    from services.orchestrator.awsapi.endpoint import admin_signer

    signer = admin_signer(token, "000000000000")
    yield "AWS_ENDPOINT_URL_ECS", url
    yield "AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING", url
    yield "AWS_REGION", region
    yield "AWS_DEFAULT_REGION", region
    yield "AWS_ACCESS_KEY_ID", signer.access_key_id
    yield "AWS_SECRET_ACCESS_KEY", signer.secret_access_key


@click.command("env")
@state_dir_option
@click.option(
    "--orchestrator",
    "orchestrator_url",
    help="Instead of the embedded stack: a control plane's URL (compose: http://127.0.0.1:8090), its admin "
    "token in PIXFLEET_ORCHESTRATOR_TOKEN; prints only the ECS exports.",
)
@click.option("--region", default="us-east-1", show_default=True, help="With --orchestrator: the region.")
def env(state_dir: Path, orchestrator_url: str | None, region: str) -> None:
    """Print shell exports for the running stack: the emulator's endpoint, region and admin keys.

    \b
      eval "$(pixfleet env)"
      aws s3 ls s3://pixfleet-output/results/ --recursive
      aws ecs list-services
    """
    if orchestrator_url:
        token = os.environ.get("PIXFLEET_ORCHESTRATOR_TOKEN")
        if not token:
            raise click.UsageError("--orchestrator needs the admin token in PIXFLEET_ORCHESTRATOR_TOKEN")
        exports = list(control_plane_exports(orchestrator_url.rstrip("/"), token, region))
        click.echo(f'# the control plane at {orchestrator_url}; use with: eval "$(pixfleet env --orchestrator …)"')
    else:
        stack = require_stack(state_dir)
        exports = list(env_exports(stack, state_dir))
        click.echo('# the running pixfleet stack; use with: eval "$(pixfleet env)"')
    for name, value in exports:
        click.echo(f"export {name}={shlex.quote(value)}")
    click.echo("# a session token left from real AWS would spoil these keys:")
    click.echo("unset AWS_SESSION_TOKEN AWS_SECURITY_TOKEN")


# --- provision ---------------------------------------------------------------------------------


@click.command()
@click.option(
    "--endpoint-url", envvar="AWS_ENDPOINT_URL", help="moto or LocalStack URL ($AWS_ENDPOINT_URL); omit for AWS."
)
@click.option("--region", envvar="AWS_REGION", default="us-east-1", show_default=True, help="Region ($AWS_REGION).")
@click.option("--max-receive-count", default=3, show_default=True, help="Deliveries before a message goes to the DLQ.")
@click.option(
    "--visibility-timeout", default=60, show_default=True, help="Seconds a received job message stays invisible."
)
def provision(endpoint_url: str | None, region: str, max_receive_count: int, visibility_timeout: int) -> None:
    """Apply the stack (buckets, queues, notification, roles) idempotently; print its outputs as JSON."""
    from infra.provision import provision as apply
    from infra.stack import StackSpec

    spec = StackSpec(max_receive_count=max_receive_count, visibility_timeout=visibility_timeout)
    with err.status(f"provisioning {endpoint_url or 'AWS'}…"):
        outputs = asyncio.run(apply(endpoint_url, region, spec))
    click.echo(json.dumps(outputs.to_dict(), indent=2))


COMMANDS = [up, down, env, provision]
