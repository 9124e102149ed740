"""``pixfleet submit`` — upload files and folders of images through the API; wait; download the variants.

What is sent: every file named on the command line (the API says what it thinks of it), and in
every folder named, recursively, each file that is an image by its extension or by magic bytes of
a format the pipeline reads (hidden files and folders skipped). What is shown: a progress bar
counting jobs, then a table of input → job → outcome (the variants, or the error code). With
``--out DIR`` every succeeded job's variants land in ``DIR/{input name}/`` — named after the input
file, made unique when two inputs share a name (``photo``, ``photo-2``). ``--json`` prints the
machine-readable list instead.

Exit status: 0 when every job was accepted (and, when waiting, succeeded); 1 otherwise; 2 for bad
input (nothing to upload, no running stack).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.errors import PixfleetError
from pipeline.transform.presets import DEFAULT_PRESET
from pipeline.transform.probe import detect_format
from pixfleet.client import download_outputs, output_names, upload, wait_for
from pixfleet.endpoints import NoRunningStack, require_stack

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".avif", ".tif", ".tiff", ".bmp", ".heic", ".heif"}
)
_SNIFF_BYTES = 64

out = Console()
err = Console(stderr=True)


class BadInput(click.UsageError):
    """Nothing to upload, or nowhere to upload it: exit status 2."""


# --- what to upload ----------------------------------------------------------------------------


def looks_like_image(path: Path) -> bool:
    """An image by its extension (``.heic`` too: the API then says it is not supported), or by magic bytes."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return False
    try:
        detect_format(head)
    except PixfleetError:  # not an image, or only image-ish (a PDF, an SVG): not what a folder of photos means
        return False
    return True


@dataclass(frozen=True)
class Inputs:
    files: tuple[Path, ...]
    skipped: tuple[Path, ...]  # files in the folders that are not images


def collect_inputs(paths: Iterable[Path]) -> Inputs:
    """Files as given; folders walked recursively (sorted, hidden entries skipped) for image files."""
    files: list[Path] = []
    skipped: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(path)

    for path in paths:
        if not path.is_dir():
            add(path)
            continue
        for folder, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                candidate = Path(folder) / name
                if name.startswith(".") or not candidate.is_file():
                    continue
                if looks_like_image(candidate):
                    add(candidate)
                else:
                    skipped.append(candidate)
    return Inputs(tuple(files), tuple(skipped))


# --- sending it --------------------------------------------------------------------------------


@dataclass
class Submission:
    """One input and what became of it."""

    path: Path
    name: str  # its output folder's name
    upload: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    folder: Path | None = None

    @property
    def job_id(self) -> str | None:
        return self.upload.get("job_id")

    @property
    def status(self) -> str:
        """``rejected`` (the API refused the upload), ``error`` (no answer), the job's status, or ``queued``."""
        if not self.job_id:
            return "rejected" if self.upload.get("http_status") else "error"
        return str(self.job.get("status") or self.upload.get("status") or "queued")

    @property
    def error(self) -> dict[str, Any] | None:
        return self.job.get("error") or (self.upload.get("error") if not self.job_id else None)

    def ok(self, waited: bool) -> bool:
        return self.status == "succeeded" if waited else self.job_id is not None

    def to_json(self) -> dict[str, Any]:
        """The machine-readable answer: the API's upload answer, plus the job's end when waited for."""
        doc = {"file": str(self.path), **self.upload}
        if self.job:
            doc.update(status=self.job.get("status"), outputs=self.job.get("outputs", []), error=self.job.get("error"))
        if self.folder is not None:
            doc.update(output_folder=str(self.folder), files=self.files)
        return doc


async def submit_all(
    api: str,
    submissions: list[Submission],
    *,
    preset: str,
    wait: bool,
    out_dir: Path | None,
    concurrency: int = 4,
    timeout: float = 300,
    console: Console | None = None,
) -> None:
    """Upload every input (``concurrency`` at a time); with ``wait``, follow each job and download its variants."""
    limit = asyncio.Semaphore(concurrency)
    columns = (
        TextColumn("{task.description:<10}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TextColumn("jobs"),
        TimeElapsedColumn(),
    )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as http:
        with Progress(*columns, console=console or err) as progress:
            uploading = progress.add_task("uploading", total=len(submissions))
            processing = progress.add_task("processing", total=len(submissions), visible=wait)

            async def one(s: Submission) -> None:
                async with limit:
                    try:
                        s.upload = await upload(http, api, s.path, preset)
                    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                        s.upload = {"error": {"code": "connection_error", "message": str(exc) or type(exc).__name__}}
                    s.upload.pop("file", None)
                progress.advance(uploading)
                if wait and s.upload.get("status_url"):
                    s.job = await wait_for(http, s.upload["status_url"], timeout)
                    if out_dir is not None and s.job.get("status") == "succeeded":
                        s.folder = out_dir / s.name
                        s.files = await download_outputs(http, s.job, s.folder)
                progress.advance(processing)

            await asyncio.gather(*(one(s) for s in submissions))


# --- showing it --------------------------------------------------------------------------------


def outcome_cell(s: Submission, *, waited: bool, timeout: float) -> str:
    status, error = s.status, s.error or {}
    if status == "succeeded":
        n = len(s.job.get("outputs", []))
        return f"[green]succeeded[/]: {n} variant{'s' if n != 1 else ''}"
    if status in ("failed", "rejected", "error"):
        code = error.get("code", "error")
        http = f" ({s.upload['http_status']})" if status == "rejected" and s.upload.get("http_status") else ""
        return f"[red]{status}[/]: {code}{http}"
    if waited:
        return f"[yellow]{status}[/] after {timeout:.0f}s"
    return "queued"


def results_table(submissions: Sequence[Submission], *, waited: bool, timeout: float, out_dir: Path | None) -> Table:
    """input → job (its id's first 8 characters, as for tasks) → outcome (→ output folder); cells wrap, never cut."""
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    table.add_column("input", overflow="fold")
    table.add_column("job", overflow="fold")
    table.add_column("outcome", overflow="fold")
    if out_dir is not None:
        table.add_column("output", overflow="fold")
    for s in submissions:
        row = [str(s.path), (s.job_id or "-")[:8], outcome_cell(s, waited=waited, timeout=timeout)]
        if out_dir is not None:
            row.append(f"{s.folder}/" if s.folder else "-")
        table.add_row(*row)
    return table


_ORDER = ("succeeded", "failed", "rejected", "error", "queued", "processing", "awaiting_upload")


def summary_line(
    submissions: Sequence[Submission], skipped: Sequence[Path], *, hints: bool = False, waited: bool = True
) -> str:
    """``4 succeeded, 1 rejected; skipped 1 file that is not an image (notes.txt)`` (+ hints for people)."""
    counts: dict[str, int] = {}
    for s in submissions:
        counts[s.status] = counts.get(s.status, 0) + 1
    ordered = sorted(counts.items(), key=lambda kv: _ORDER.index(kv[0]) if kv[0] in _ORDER else len(_ORDER))
    parts = [", ".join(f"{n} {status}" for status, n in ordered)] if ordered else []
    if skipped:
        shown = ", ".join(str(p) for p in skipped[:3]) + (", …" if len(skipped) > 3 else "")
        many = len(skipped) != 1
        parts.append(
            f"skipped {len(skipped)} {'files that are not images' if many else 'file that is not an image'} ({shown})"
        )
    if hints and not waited and counts.get("queued"):
        parts.append("--wait follows the jobs to their end")
    if hints and any(s.job_id for s in submissions):
        parts.append("full job ids: --json")
    return "; ".join(parts)


# --- the command -------------------------------------------------------------------------------


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--preset", default=DEFAULT_PRESET, show_default=True, help="Preset of variants to render (`GET /v1/presets`)."
)
@click.option("--wait/--no-wait", default=False, help="Wait for the jobs to finish.  [default: no-wait]")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Download each job's variants into OUT/{input name}/ (implies --wait).",
)
@click.option("--api", help="API base URL (default: the running stack's, from stack.json).")
@click.option("--concurrency", default=4, show_default=True, help="Uploads in flight at once.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for the jobs.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (full job ids, outputs, URLs).")
def submit(
    paths: tuple[Path, ...],
    preset: str,
    wait: bool,
    out_dir: Path | None,
    api: str | None,
    concurrency: int,
    timeout: float,
    as_json: bool,
) -> None:
    """Upload image FILES and FOLDERS (recursively) through the API; show each job's outcome.

    \b
      pixfleet submit photo.jpg            # queue one job
      pixfleet submit photos/ --out out/   # all images below photos/; download
    """
    if api is None:
        try:
            api = require_stack(instead="--api URL")["api_url"]
        except NoRunningStack as exc:
            raise BadInput(exc.message) from None
    inputs = collect_inputs(paths)
    if not inputs.files:
        raise BadInput(f"no images to upload in {', '.join(map(str, paths))}: {summary_line([], inputs.skipped)}")
    waited = wait or out_dir is not None
    submissions = [Submission(p, name) for p, name in zip(inputs.files, output_names(inputs.files), strict=True)]
    asyncio.run(
        submit_all(
            api.rstrip("/"),
            submissions,
            preset=preset,
            wait=waited,
            out_dir=out_dir,
            concurrency=concurrency,
            timeout=timeout,
        )
    )
    if as_json:
        click.echo(json.dumps([s.to_json() for s in submissions], indent=2))
    else:
        out.print(results_table(submissions, waited=waited, timeout=timeout, out_dir=out_dir))
        err.print(summary_line(submissions, inputs.skipped, hints=True, waited=waited), highlight=False)
    if not all(s.ok(waited) for s in submissions):
        sys.exit(1)
