"""The embedded stack as the benchmarks use it: start it, find its task processes, upload, wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from pixfleet.stack import EmbeddedConfig, EmbeddedStack


@asynccontextmanager
async def running_stack(state_dir: Path, *, workers: int, **config: Any) -> AsyncIterator[EmbeddedStack]:
    """An embedded stack with exactly ``workers`` worker tasks (autoscaling pinned), API on a free port."""
    # 0: no scalable target at all, so that no worker starts for the backlog (the count stays 0)
    config.setdefault("autoscaling", workers > 0)
    async with EmbeddedStack(
        EmbeddedConfig(state_dir=state_dir, workers=workers, max_workers=max(1, workers), api_port=0, **config)
    ) as stack:
        yield stack


async def task_pids(stack: EmbeddedStack, service: str) -> list[int]:
    """Process ids of a service's running tasks (``api`` or ``worker``)."""
    return [t["pid"] for t in await stack.control.tasks(service) if t.get("pid")]


async def upload(http: aiohttp.ClientSession, api_url: str, data: bytes, preset: str) -> str:
    """POST one image as a raw body (Content-Type from its magic bytes); the job id."""
    from pipeline.transform.probe import detect_format

    content_type = f"image/{detect_format(data[:4096])}"
    headers = {"Content-Type": content_type}
    async with http.post(f"{api_url}/v1/images?preset={preset}", data=data, headers=headers) as r:
        body = await r.json()
        if r.status != 202:
            raise RuntimeError(f"upload refused: {r.status} {body}")
        return body["job_id"]


async def wait_jobs(
    http: aiohttp.ClientSession, api_url: str, job_ids: list[str], timeout: float = 600.0, on_done: Any = None
) -> dict[str, Any]:
    """Poll until every job is succeeded or failed; their status documents by id."""
    pending, done = list(job_ids), {}
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} job(s) not finished after {timeout:.0f}s")
        for job_id in list(pending):
            async with http.get(f"{api_url}/v1/jobs/{job_id}") as r:
                status = await r.json()
            if status.get("status") in ("succeeded", "failed"):
                done[job_id] = status
                pending.remove(job_id)
                if on_done:
                    on_done()
            else:
                break  # jobs finish roughly in order: look again later
        await asyncio.sleep(0.05)
    return done
