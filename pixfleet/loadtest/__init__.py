"""``pixfleet load`` — load tests measured by queue depth, workers and end-to-end latency.

The pieces: :mod:`.schedule` (when to submit), :mod:`.sources` (what to submit),
:mod:`.probes` (where queue depth and workers are read), :mod:`.runner` (the run),
:mod:`.view` (the live view) and :mod:`.report` (summary, timeline, plot).
Exit status: 0 passed, 1 failures above ``--max-failure-rate``, 2 bad input.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import aiohttp
import click
from rich.console import Console
from rich.live import Live

from pixfleet.endpoints import NoRunningStack, read_stack, require_stack
from pixfleet.loadtest.probes import READ_ERRORS, ApiProbe, FleetProbe, OrchestratorProbe
from pixfleet.loadtest.schedule import parse_schedule

console = Console(stderr=True)


class BadInput(click.ClickException):
    """Bad input (unreachable API, empty image directory…): a clear message and exit status 2."""

    exit_code = 2


def _endpoints(api: str | None, orchestrator: str | None, state_dir: Path) -> tuple[str, str | None]:
    if api is None:
        try:
            running = require_stack(state_dir, instead="--api URL")
        except NoRunningStack as exc:
            raise BadInput(exc.message) from None
        api = running["api_url"]
    stack = read_stack(state_dir)
    api = api.rstrip("/")
    if orchestrator is None and stack is not None and stack.get("api_url", "").rstrip("/") == api:
        orchestrator = stack.get("orchestrator_url")
    return api, orchestrator.rstrip("/") if orchestrator else None


async def _preflight(api: str, preset: str, api_key: str | None, probe: FleetProbe | None) -> None:
    """Refuse to start against an API that does not answer, a preset it does not know, or a silent orchestrator."""
    headers = {"X-API-Key": api_key} if api_key else {}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as http:
        try:
            async with http.get(f"{api}/v1/presets") as response:
                body = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise BadInput(f"cannot reach the API at {api}: {exc or type(exc).__name__}") from None
        if status == 401:
            raise BadInput(f"the API at {api} wants an API key: pass --api-key or set PIXFLEET_API_KEY")
        if status != 200:
            raise BadInput(f"the API at {api} answered {status} to GET /v1/presets: {body}")
        names = [p["name"] for p in body.get("presets", [])]
        if preset not in names:
            raise BadInput(f"unknown preset {preset!r}; the API knows {', '.join(names)}")
        if probe is not None:
            try:
                await probe.read(http)
            except READ_ERRORS as exc:
                where = getattr(probe, "url", "")
                raise BadInput(
                    f"cannot read queue depth and workers from the {probe.name} at {where}: {exc or type(exc).__name__}"
                ) from None


@click.command("load")
@click.option("--api", envvar="PIXFLEET_API_URL", help="API base URL (default: the running stack's, from stack.json).")
@click.option(
    "--orchestrator",
    "orchestrator_url",
    help="Orchestrator URL for queue depth and workers (default: the running stack's; else the API's /v1/fleet).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="PIXFLEET_STATE_DIR",
    default=".pixfleet",
    show_default=True,
    help="State directory of the running stack (its stack.json).",
)
@click.option(
    "--images",
    "images_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Upload the images of this directory (default: generate them).",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the generated images and of the order of uploads.")
@click.option("--pool", default=12, show_default=True, help="How many distinct images to generate.")
@click.option(
    "--poison",
    default=0.0,
    show_default=True,
    help="Fraction of generated uploads that are poison files (truncated JPEGs), for failure drills.",
)
@click.option(
    "--schedule",
    "schedule_text",
    default="constant:5",
    show_default=True,
    help="constant:RATE (jobs/s), ramp:FROM-TO (jobs/s over the duration) or burst:N.",
)
@click.option("--duration", default=30.0, show_default=True, help="Seconds of submitting (ignored by burst).")
@click.option("--concurrency", default=8, show_default=True, help="Uploads in flight at once.")
@click.option("--preset", default="thumbs", show_default=True, help="Preset of variants to render.")
@click.option(
    "--drain-timeout", default=300.0, show_default=True, help="Seconds to wait for the last jobs after submitting."
)
@click.option(
    "--tail",
    default=0.0,
    show_default=True,
    help="Seconds to keep sampling after the last job (to watch the scale-in).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write summary.json, timeline.json, timeline.png and jobs.json here.",
)
@click.option(
    "--max-failure-rate",
    default=0.0,
    show_default=True,
    help="Exit 1 when rejected + failed + unfinished jobs exceed this fraction.",
)
@click.option("--api-key", envvar="PIXFLEET_API_KEY", help="X-API-Key to send (when the API has PIXFLEET_API_KEYS).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def load(
    api: str | None,
    orchestrator_url: str | None,
    state_dir: Path,
    images_dir: Path | None,
    seed: int,
    pool: int,
    poison: float,
    schedule_text: str,
    duration: float,
    concurrency: int,
    preset: str,
    drain_timeout: float,
    tail: float,
    out: Path | None,
    max_failure_rate: float,
    api_key: str | None,
    as_json: bool,
) -> None:
    """Load-test the pipeline on a rate schedule; measure queue depth, workers and end-to-end latency.

    \b
    pixfleet load --schedule constant:5 --duration 30 --out load/
    pixfleet load --schedule ramp:1-20 --duration 60 --tail 40 --out ramp/
    pixfleet load --schedule burst:300 --images photos/ --max-failure-rate 0.01
    """
    from pixfleet.loadtest.report import build_summary, build_timeline, summary_table, write_outputs
    from pixfleet.loadtest.runner import LoadConfig, LoadTest
    from pixfleet.loadtest.sources import DirectoryImages, GeneratedImages, ImageSource

    try:
        schedule = parse_schedule(schedule_text, duration)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--schedule") from None
    for name, value, ok in (
        ("--concurrency", concurrency, concurrency >= 1),
        ("--pool", pool, pool >= 1),
        ("--poison", poison, 0 <= poison <= 1),
        ("--max-failure-rate", max_failure_rate, 0 <= max_failure_rate <= 1),
        ("--drain-timeout", drain_timeout, drain_timeout > 0),
        ("--tail", tail, tail >= 0),
    ):
        if not ok:
            raise click.BadParameter(f"{value} is out of range", param_hint=name)
    source: ImageSource
    if images_dir is not None:
        if not images_dir.is_dir():
            raise BadInput(f"--images {images_dir}: no such directory")
        source = DirectoryImages(images_dir, seed)
        if not source.files:
            raise BadInput(f"--images {images_dir}: no image files in it (.jpg, .png, .webp, .gif, .avif, .tif, .bmp)")
    api, orchestrator_url = _endpoints(api, orchestrator_url, state_dir)
    probe: FleetProbe = OrchestratorProbe(orchestrator_url) if orchestrator_url else ApiProbe(api)
    asyncio.run(_preflight(api, preset, api_key, probe))
    if images_dir is None:
        with console.status(f"generating {pool} images (seed {seed})…"):
            source = GeneratedImages(seed, pool, poison)
    settings: dict[str, Any] = {
        "api": api,
        "preset": preset,
        "schedule": schedule.describe(),
        "schedule_spec": schedule_text,
        "duration_s": duration,
        "concurrency": concurrency,
        "seed": seed,
        "images": source.describe(),
    }
    test = LoadTest(
        LoadConfig(
            api=api, preset=preset, concurrency=concurrency, drain_timeout=drain_timeout, tail=tail, api_key=api_key
        ),
        schedule,
        source,
        probe,
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, test.stop)
        from pixfleet.loadtest.view import render

        with Live(get_renderable=lambda: render(test), console=console, refresh_per_second=2, transient=False):
            await test.run()

    asyncio.run(run())
    timeline = build_timeline(test)
    summary = build_summary(test, timeline, max_failure_rate=max_failure_rate, settings=settings)
    console.print(summary_table(summary))
    if out is not None:
        paths = write_outputs(out, test, summary, timeline)
        console.print(f"wrote {', '.join(str(p) for p in paths.values())}")
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    if not summary["passed"]:
        raise SystemExit(1)
