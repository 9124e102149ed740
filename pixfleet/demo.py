"""``pixfleet demo`` — the whole pipeline in one command, with a report to open.

On the embedded default it starts the stack (moto, the orchestrator, the API and
worker tasks), generates a small varied set of images (photos in JPEG, PNG and WebP,
an EXIF-rotated JPEG, a transparent PNG and one poison file), uploads them with a
progress bar, waits for the jobs, downloads the outputs into ``--out`` and writes
``report.html`` there: every input beside its variants, sizes and timings, and the
poison file's error. Then it stops the stack, or keeps it running with ``--keep``
(Ctrl-C stops it). ``--docker`` (or ``--api URL``) runs the same against a stack
that is already running, e.g. the compose stack.

Exit status: 0 when every input ended as expected (the poison file failed with
``corrupt_image``, everything else succeeded), 1 otherwise, 2 for bad input.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.transform.presets import DEFAULT_PRESET
from pixfleet.client import download_outputs, output_names, upload, wait_for
from pixfleet.endpoints import compose_api_url, is_stale, read_stack
from pixfleet.samples import Sample, demo_samples

console = Console(stderr=True)


class BadInput(click.ClickException):
    exit_code = 2


@dataclass
class Outcome:
    """One input of the demo and what became of it."""

    sample: Sample
    path: Path
    upload: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.job.get("status"):
            return str(self.job["status"])
        return "rejected" if self.upload and not self.upload.get("job_id") else "unknown"

    @property
    def error(self) -> dict[str, Any] | None:
        if self.job.get("error"):
            return self.job["error"]
        return self.upload.get("error") if self.status == "rejected" else None

    @property
    def as_expected(self) -> bool:
        if self.status != self.sample.expect:
            return False
        return self.sample.expect_error is None or (self.error or {}).get("code") == self.sample.expect_error

    def public(self, out: Path) -> dict[str, Any]:
        outputs = self.job.get("outputs", [])
        files: list[str | None] = [*self.files] or [None] * len(outputs)
        return {
            "input": self.sample.name,
            "description": self.sample.description,
            "bytes": len(self.sample.data),
            "width": self.sample.width,
            "height": self.sample.height,
            "expected": self.sample.expect,
            "status": self.status,
            "as_expected": self.as_expected,
            "job_id": self.upload.get("job_id"),
            "error": self.error,
            # download_outputs() returns the files in the order of the job's outputs
            "outputs": [
                {**o, "file": os.path.relpath(f, out) if f else None} for o, f in zip(outputs, files, strict=True)
            ],
            "timings": timings(self.job),
        }


def _epoch(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else None


def timings(job: dict[str, Any]) -> dict[str, float | None]:
    """Seconds in the queue, in the worker and in total, from the job's own timestamps."""
    submitted, started, finished = (_epoch(job.get(k)) for k in ("submitted_at", "started_at", "finished_at"))

    def diff(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(b - a, 3)

    return {
        "queued_s": diff(submitted, started),
        "processing_s": diff(started, finished),
        "total_s": diff(submitted, finished),
    }


# --- running it -----------------------------------------------------------------------------


async def run_demo(
    api: str, samples: list[Sample], out: Path, *, preset: str, timeout: float, api_key: str | None = None
) -> list[Outcome]:
    """Upload every sample, follow the jobs to their end, download the outputs into ``out``."""
    inputs = out / "inputs"
    outcomes = [Outcome(s, s.write(inputs)) for s in samples]
    folders = dict(zip((o.sample.name for o in outcomes), output_names([o.path for o in outcomes]), strict=True))
    headers = {"X-API-Key": api_key} if api_key else {}
    columns = (
        TextColumn("{task.description:<11}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
    )
    async with aiohttp.ClientSession(
        headers=headers, timeout=aiohttp.ClientTimeout(total=120, sock_connect=10)
    ) as http:
        with Progress(*columns, console=console) as progress:
            uploading = progress.add_task("uploading", total=len(outcomes), note="")
            processing = progress.add_task("processing", total=len(outcomes), note="")
            limit = asyncio.Semaphore(4)

            async def one(outcome: Outcome) -> None:
                async with limit:
                    try:
                        outcome.upload = await upload(http, api, outcome.path, preset)
                    except aiohttp.ClientError as exc:
                        outcome.upload = {"error": {"code": "connection_error", "message": str(exc)}}
                progress.update(uploading, advance=1, note=outcome.sample.name)
                if outcome.upload.get("status_url"):
                    outcome.job = await wait_for(http, outcome.upload["status_url"], timeout)
                    if outcome.job.get("status") == "succeeded":
                        folder = out / "outputs" / folders[outcome.sample.name]
                        outcome.files = await download_outputs(http, outcome.job, folder)
                progress.update(processing, advance=1, note=f"{outcome.sample.name}: {outcome.status}")

            await asyncio.gather(*(one(o) for o in outcomes))
    return outcomes


def write_results(
    out: Path, outcomes: list[Outcome], *, api: str, preset: str, started: float, stack: str
) -> tuple[Path, Path]:
    """``demo.json`` (machine-readable) and ``report.html`` (for people) in ``out``."""
    doc = {
        "api": api,
        "stack": stack,
        "preset": preset,
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.time() - started, 1),
        "all_as_expected": all(o.as_expected for o in outcomes),
        "inputs": [o.public(out) for o in outcomes],
    }
    json_path = out / "demo.json"
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    report = out / "report.html"
    report.write_text(render_report(doc))
    return json_path, report


# --- the report -------------------------------------------------------------------------------

_CSS = """
:root { color-scheme: light dark; --ok: #1a7f37; --bad: #cf222e; --muted: #6e7781; --line: #d0d7de; }
body { font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; padding: 0 1rem; }
h1 { margin-bottom: .2rem; } .muted { color: var(--muted); }
table.summary { border-collapse: collapse; margin: 1rem 0 2rem; width: 100%; }
table.summary th, table.summary td { border-bottom: 1px solid var(--line); padding: .35rem .6rem; text-align: left; }
.badge { border-radius: 1rem; padding: .05rem .6rem; font-weight: 600; font-size: .85rem; color: #fff; }
.succeeded { background: var(--ok); } .failed, .rejected, .unknown { background: var(--bad); }
section.job { border: 1px solid var(--line); border-radius: .5rem; margin: 1.5rem 0; padding: 1rem 1.25rem; }
section.job h2 { font-size: 1.1rem; margin: 0 0 .5rem; display: flex; gap: .75rem; align-items: center; }
.row { display: grid; grid-template-columns: 280px 1fr; gap: 1.25rem; align-items: start; }
.variants { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-end; }
@media (max-width: 700px) { .row { grid-template-columns: 1fr; } }
figure { margin: 0 0 .5rem; max-width: 260px; } figure img { max-width: 100%; max-height: 180px; display: block;
  background: repeating-conic-gradient(#ccc 0 25%, #fff 0 50%) 0 0 / 16px 16px; border: 1px solid var(--line); }
figcaption { font-size: .85rem; } .variants figure { max-width: 200px; }
.error { background: #ffebe9; color: #82071e; border-radius: .4rem; padding: .5rem .75rem;
  font-family: ui-monospace, monospace; }
dl { display: grid; grid-template-columns: max-content auto; gap: .1rem .8rem; margin: 0; font-size: .85rem; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
"""


def _kib(n: int | None) -> str:
    return "–" if n is None else f"{n / 1024:.1f} KiB"


def _s(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f} s"


def render_report(doc: dict[str, Any]) -> str:
    """A self-contained HTML page (inline CSS; images are relative links to the downloaded files)."""
    e = html.escape
    rows, sections = [], []
    for i, item in enumerate(doc["inputs"]):
        status, anchor = item["status"], f"input-{i + 1}"
        error = item["error"]
        outcome = f'<span class="badge {e(status)}">{e(status)}</span>'
        note = "" if item["as_expected"] else " <strong>(not as expected: wanted " + e(item["expected"]) + ")</strong>"
        name = e(item["input"])
        summary = f"{len(item['outputs'])} variants" if status == "succeeded" else e((error or {}).get("code", ""))
        rows.append(
            f'<tr data-input="{name}" data-status="{e(status)}"><td><a href="#{anchor}">{name}</a></td>'
            f"<td>{e(item['description'])}</td><td>{_kib(item['bytes'])}</td><td>{outcome}{note}</td>"
            f"<td>{summary}</td><td>{_s(item['timings']['total_s'])}</td></tr>"
        )
        figures = [
            f'<figure><a href="{e(o["file"])}">'
            f'<img src="{e(o["file"])}" alt="{e(o["variant"])} of {name}" loading="lazy"></a>'
            f"<figcaption><strong>{e(o['variant'])}</strong> · {e(o['format'])} {o['width']}×{o['height']} · "
            f"{_kib(o['bytes'])}</figcaption></figure>"
            for o in item["outputs"]
            if o.get("file")
        ]
        timing = item["timings"]
        details = (
            f"<dl><dt>size</dt><dd>{_kib(item['bytes'])}, {item['width']}×{item['height']}</dd>"
            f"<dt>job</dt><dd>{e(item['job_id'] or '–')}</dd>"
            f"<dt>queued</dt><dd>{_s(timing['queued_s'])}</dd><dt>processing</dt><dd>{_s(timing['processing_s'])}</dd>"
            f"<dt>accepted → done</dt><dd>{_s(timing['total_s'])}</dd></dl>"
        )
        error_html = (
            f'<p class="error" role="alert">{e(error.get("code", ""))}: {e(error.get("message", ""))}</p>'
            if error
            else ""
        )
        sections.append(
            f'<section class="job" id="{anchor}" data-input="{name}" data-status="{e(status)}">'
            f'<h2>{name} {outcome}</h2><p class="muted">{e(item["description"])}</p>{error_html}'
            f'<div class="row"><div class="input"><figure><a href="inputs/{name}">'
            f'<img src="inputs/{name}" alt="input {name}" loading="lazy"></a>'
            f"<figcaption><strong>input</strong></figcaption></figure>{details}</div>"
            f'<div class="variants">{"".join(figures)}</div></div></section>'
        )
    succeeded = sum(1 for i in doc["inputs"] if i["status"] == "succeeded")
    verdict = "every input ended as expected" if doc["all_as_expected"] else "some inputs did not end as expected"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>pixfleet demo report</title><style>{_CSS}</style></head>
<body><main>
<h1>pixfleet demo</h1>
<p class="muted">{len(doc["inputs"])} inputs, {succeeded} succeeded · preset <code>{e(doc["preset"])}</code> · \
{e(doc["stack"])} stack at {e(doc["api"])} ·
started {e(doc["started_at"])}, {doc["wall_s"]} s · {verdict}</p>
<table class="summary"><thead><tr><th>input</th><th>what it is</th><th>size</th><th>outcome</th>\
<th>variants / error</th><th>accepted → done</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
{"".join(sections)}
</main></body></html>
"""


def print_outcomes(outcomes: list[Outcome]) -> None:
    """The outcome of every input; long cells wrap (names in full), none is cut short."""
    table = Table(title="demo", title_justify="left", box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    table.add_column("input", overflow="fold", min_width=12)
    table.add_column("outcome", no_wrap=True)
    table.add_column("variants / error", overflow="fold", ratio=1)
    table.add_column("done in", no_wrap=True, justify="right")
    for o in outcomes:
        style = "green" if o.as_expected else "red"
        detail = (
            f"{len(o.job.get('outputs', []))} variants"
            if o.status == "succeeded"
            else f"{(o.error or {}).get('code')}: {(o.error or {}).get('message')}"
        )
        table.add_row(o.sample.name, f"[{style}]{o.status}[/]", detail, _s(timings(o.job)["total_s"]))
    console.print(table)


# --- the command ------------------------------------------------------------------------------


async def _healthy(api: str) -> bool:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.get(f"{api}/healthz") as r,
        ):
            return r.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@click.command("demo")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("pixfleet-demo"),
    show_default=True,
    help="Folder for the inputs, outputs and report.html.",
)
@click.option("--keep", is_flag=True, help="Keep the embedded stack running afterwards (Ctrl-C stops it).")
@click.option(
    "--docker",
    is_flag=True,
    help="Run against the compose stack ($PIXFLEET_API_URL or .env's, else http://127.0.0.1:8080).",
)
@click.option("--api", help="Run against the API at this URL instead of starting a stack.")
@click.option("--api-key", envvar="PIXFLEET_API_KEY", help="X-API-Key to send (when the API has PIXFLEET_API_KEYS).")
@click.option("--preset", default=DEFAULT_PRESET, show_default=True, help="Preset of variants to render.")
@click.option("--seed", default=0, show_default=True, help="Seed of the generated images.")
@click.option("--port", default=0, show_default=True, help="API port of the embedded stack (0 picks a free one).")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="PIXFLEET_STATE_DIR",
    default=".pixfleet",
    show_default=True,
    help="State directory of the embedded stack (stack.json, logs).",
)
@click.option("--timeout", default=180.0, show_default=True, help="Seconds to wait for the jobs.")
def demo(
    out: Path,
    keep: bool,
    docker: bool,
    api: str | None,
    api_key: str | None,
    preset: str,
    seed: int,
    port: int,
    state_dir: Path,
    timeout: float,
) -> None:
    """Start the stack, upload a varied set of images (one of them poison), and write a report of the results."""
    if docker and api:
        raise click.UsageError("--docker and --api are alternatives")
    if keep and (docker or api):
        raise click.UsageError("--keep keeps the embedded stack running; with --docker or --api there is none")
    if docker:
        api = compose_api_url()
    samples = demo_samples(seed)
    started = time.time()
    if api is not None:
        api = api.rstrip("/")
        if not asyncio.run(_healthy(api)):
            where = "the compose stack (start it first, or set PIXFLEET_API_URL)" if docker else "--api"
            raise BadInput(f"no healthy pixfleet API at {api}: {where}")
        outcomes = asyncio.run(run_demo(api, samples, out, preset=preset, timeout=timeout, api_key=api_key))
        _finish(out, outcomes, api=api, preset=preset, started=started, stack="compose" if docker else "remote")
        return

    running = read_stack(state_dir)
    if running and not is_stale(running) and asyncio.run(_healthy(running["api_url"])):
        raise BadInput(
            f"a stack is already running at {running['api_url']} ({state_dir / 'stack.json'}): "
            f"run `pixfleet demo --api {running['api_url']}` against it, or stop it first"
        )

    async def embedded() -> list[Outcome]:
        from pixfleet.stack import EmbeddedConfig, EmbeddedStack

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)  # type: ignore[union-attr]
        stack = EmbeddedStack(EmbeddedConfig(state_dir=state_dir, workers=1, max_workers=2, api_port=port))
        try:
            with console.status("starting the embedded stack: emulator, orchestrator, API and worker tasks…"):
                await stack.start()
            console.print(f"stack up: API {stack.api_url} · orchestrator {stack.orchestrator_url}")
            outcomes = await run_demo(stack.api_url, samples, out, preset=preset, timeout=timeout, api_key=api_key)
            _finish(out, outcomes, api=stack.api_url, preset=preset, started=started, stack="embedded")
            if keep:
                console.print(f"upload page: {stack.api_url}/")
                console.print(
                    "[bold]the stack keeps running[/] (try `pixfleet status`, `pixfleet load`); "
                    "Ctrl-C or `pixfleet down` stops it"
                )
                await _wait_for_signal()
            return outcomes
        finally:
            with console.status("stopping the stack (draining workers)…"):
                await stack.stop(timeout=30)

    outcomes = asyncio.run(embedded())
    if not keep:
        console.print(
            "the stack is stopped; for the upload page keep one running: `pixfleet demo --keep`, or `pixfleet up`"
        )
    if not all(o.as_expected for o in outcomes):
        raise SystemExit(1)


def _finish(out: Path, outcomes: list[Outcome], *, api: str, preset: str, started: float, stack: str) -> None:
    json_path, report = write_results(out, outcomes, api=api, preset=preset, started=started, stack=stack)
    print_outcomes(outcomes)
    console.print(f"report: [bold]{report.resolve().as_uri()}[/]  (data: {json_path})")
    if stack != "embedded":
        console.print(f"upload page: {api}/")
    if stack != "embedded" and not all(o.as_expected for o in outcomes):
        raise SystemExit(1)
