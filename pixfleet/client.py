"""A small HTTP client of the upload API, used by ``pixfleet submit`` (and the demo and load tools)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn

from pipeline.manifest import TERMINAL
from pipeline.transform.media import SUFFIX_MEDIA_TYPES as CONTENT_TYPES


async def upload(
    http: aiohttp.ClientSession, api: str, path: Path, preset: str, on_bytes: Any = None
) -> dict[str, Any]:
    """Upload one file as multipart; return the API's JSON (job or error) plus ``file``."""

    async def chunks() -> Any:
        with path.open("rb") as f:
            while chunk := f.read(256 * 1024):
                if on_bytes:
                    on_bytes(len(chunk))
                yield chunk

    form = aiohttp.FormData()
    form.add_field(
        "file",
        chunks(),
        filename=path.name,
        content_type=CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"),
    )
    async with http.post(f"{api}/v1/images", params={"preset": preset}, data=form) as response:
        body = await response.json(content_type=None)
    return {"file": str(path), "http_status": response.status, **body}


async def wait_for(
    http: aiohttp.ClientSession, status_url: str, timeout: float, interval: float = 0.25
) -> dict[str, Any]:
    """Poll a job until it is succeeded or failed (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    while True:
        async with http.get(status_url) as response:
            job = await response.json(content_type=None)
        if job.get("status") in TERMINAL or time.monotonic() > deadline:
            return job
        await asyncio.sleep(interval)


async def download_outputs(http: aiohttp.ClientSession, job: dict[str, Any], out: Path) -> list[str]:
    folder = out / job["job_id"]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for output in job.get("outputs", []):
        path = folder / f"{output['variant']}.{output['format'].replace('jpeg', 'jpg')}"
        async with http.get(output["url"]) as response:
            response.raise_for_status()
            path.write_bytes(await response.read())
        paths.append(str(path))
    return paths


async def submit_files(
    api: str,
    files: list[Path],
    *,
    preset: str,
    wait: bool,
    out: Path | None,
    concurrency: int = 4,
    timeout: float = 300,
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """Upload ``files`` with a progress bar; with ``wait``, poll to the end and download to ``out``."""
    limit = asyncio.Semaphore(concurrency)
    total = sum(p.stat().st_size for p in files)
    results: list[dict[str, Any]] = [{} for _ in files]
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as http:
        with Progress(*columns, console=console, transient=False) as progress:
            bar = progress.add_task("uploading", total=total)

            async def one(i: int, path: Path) -> None:
                async with limit:
                    results[i] = await upload(http, api, path, preset, lambda n: progress.advance(bar, n))

            await asyncio.gather(*(one(i, p) for i, p in enumerate(files)))
            if not wait:
                return results
            accepted = [r for r in results if r.get("status_url")]
            jobs_bar = progress.add_task("processing", total=len(accepted))

            async def follow(result: dict[str, Any]) -> None:
                job = await wait_for(http, result["status_url"], timeout)
                result.update(status=job.get("status"), outputs=job.get("outputs", []), error=job.get("error"))
                if out is not None and job.get("status") == "succeeded":
                    result["files"] = await download_outputs(http, job, out)
                progress.advance(jobs_bar)

            await asyncio.gather(*(follow(r) for r in accepted))
    return results
