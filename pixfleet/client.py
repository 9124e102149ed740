"""A small HTTP client of the upload API, used by ``pixfleet submit``, the demo and the load tool."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

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


def output_names(files: Sequence[Path]) -> list[str]:
    """A folder name per input: its file name without the extension, suffixed ``-2``, ``-3``… where taken.

    Names are compared case-insensitively, so they stay distinct on case-insensitive file systems.
    """
    taken: set[str] = set()
    names = []
    for path in files:
        base = path.stem or path.name
        name, n = base, 2
        while name.casefold() in taken:
            name, n = f"{base}-{n}", n + 1
        taken.add(name.casefold())
        names.append(name)
    return names


async def download_outputs(http: aiohttp.ClientSession, job: dict[str, Any], folder: Path) -> list[str]:
    """Save a succeeded job's variants as ``folder/{variant}.{ext}``; the paths, in the job's order of outputs."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for output in job.get("outputs", []):
        path = folder / f"{output['variant']}.{output['format'].replace('jpeg', 'jpg')}"
        async with http.get(output["url"]) as response:
            response.raise_for_status()
            path.write_bytes(await response.read())
        paths.append(str(path))
    return paths
