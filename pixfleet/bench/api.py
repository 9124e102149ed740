"""``pixfleet bench api``: upload throughput and latency, and the API's memory under big uploads.

Against a fresh embedded stack with no worker running (only the API is measured;
jobs just queue), all traffic on 127.0.0.1:

1. **Throughput** — ``concurrency`` clients send ``requests`` raw-body uploads of a
   256 KB JPEG; accepted (202) uploads per second and latency percentiles.
2. **Memory** — ``big_clients`` clients each stream a ``big_bytes`` body (a JPEG
   header, then padding: the API checks the header and streams the rest to S3) at
   the same time. The API process's peak RSS (``VmHWM``, reset before the run) must
   stay under 150 MB: uploads are streamed in parts within a byte budget, never buffered whole.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from pixfleet.bench.corpus import photo
from pixfleet.bench.measure import machine, peak_rss_mb, reset_peak_rss, status_kib
from pixfleet.bench.stack import running_stack, task_pids
from pixfleet.stats import percentile

RSS_GOAL_MB = 150.0
STREAM_CHUNK = 256 * 1024


def jpeg_of_size(size: int, seed: int = 3) -> bytes:
    """A real JPEG padded after its end marker to exactly ``size`` bytes (when it is smaller)."""
    from PIL import Image

    buf = io.BytesIO()
    photo(640, 480, seed).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    while len(data) > size:  # pragma: no cover - only for sizes below ~100 KB
        buf = io.BytesIO()
        Image.open(io.BytesIO(data)).reduce(2).save(buf, "JPEG", quality=80)
        data = buf.getvalue()
    return data + b"\0" * (size - len(data))


async def _stream(data: memoryview) -> AsyncIterator[bytes]:
    for i in range(0, len(data), STREAM_CHUNK):
        yield bytes(data[i : i + STREAM_CHUNK])


async def throughput(
    api_url: str, body: bytes, requests: int, concurrency: int, progress: Any = None
) -> dict[str, Any]:
    """``requests`` uploads of ``body`` from ``concurrency`` clients; rates and latency percentiles."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    task = progress.add_task("api · 256 KB uploads", total=requests) if progress else None

    async def client(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            queue.get_nowait()
            t0 = time.perf_counter()
            async with http.post(
                f"{api_url}/v1/images?preset=web", data=body, headers={"Content-Type": "image/jpeg"}
            ) as r:
                await r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1
            latencies.append((time.perf_counter() - t0) * 1000)
            if progress:
                progress.advance(task)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    accepted = statuses.get(202, 0)
    return {
        "requests": requests,
        "concurrency": concurrency,
        "image_bytes": len(body),
        "seconds": round(elapsed, 3),
        "accepted": accepted,
        "statuses": {str(k): v for k, v in statuses.items()},
        "accepted_per_s": round(accepted / elapsed, 2),
        "mb_per_s": round(accepted * len(body) / elapsed / 1e6, 2),
        # None when no upload answered: an empty sample has no latency
        "latency_ms": {f"p{q}": _ms(percentile(latencies, q)) for q in (50, 90, 99)}
        | {"max": _ms(max(latencies, default=None))},
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _whole(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


async def memory(api_url: str, api_pid: int, clients: int, size: int, progress: Any = None) -> dict[str, Any]:
    """``clients`` simultaneous uploads of ``size`` bytes; the API's peak RSS meanwhile."""
    body = memoryview(jpeg_of_size(size))
    baseline = (status_kib(api_pid, "VmRSS") or 0) * 1024 / 1e6
    reset = reset_peak_rss(api_pid)
    samples: list[float] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            samples.append((status_kib(api_pid, "VmRSS") or 0) * 1024 / 1e6)
            await asyncio.sleep(0.05)

    task = progress.add_task(f"api · {clients} × {size / 1e6:.0f} MB at once", total=clients) if progress else None
    statuses: dict[int, int] = {}

    async def client(http: aiohttp.ClientSession) -> None:
        headers = {"Content-Type": "image/jpeg", "Content-Length": str(len(body))}
        async with http.post(f"{api_url}/v1/images?preset=web", data=_stream(body), headers=headers) as r:
            await r.read()
            statuses[r.status] = statuses.get(r.status, 0) + 1
        if progress:
            progress.advance(task)

    sampler = asyncio.create_task(sample())
    connector = aiohttp.TCPConnector(limit=clients)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=1800)) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    stop.set()
    await sampler
    peak = peak_rss_mb(api_pid) if reset else max(samples, default=0.0)
    return {
        "clients": clients,
        "bytes_each": size,
        "seconds": round(elapsed, 3),
        "statuses": {str(k): v for k, v in statuses.items()},
        "accepted": statuses.get(202, 0),
        "mb_per_s": round(statuses.get(202, 0) * size / elapsed / 1e6, 2),
        "rss_before_mb": round(baseline, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_rss_sampled_mb": round(max(samples, default=0.0), 1),
        "peak_source": "VmHWM after clear_refs" if reset else "VmRSS sampled every 50 ms",
        "goal_mb": RSS_GOAL_MB,
    }


async def benchmark(
    *,
    requests: int,
    concurrency: int,
    image_bytes: int,
    big_clients: int,
    big_bytes: int,
    api_env: dict[str, str] | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """The report ``--json`` writes."""
    with tempfile.TemporaryDirectory(prefix="pixfleet-bench-api-") as tmp:
        # One API task, straight on its port: the memory of one process, measured without a proxy in between.
        async with running_stack(Path(tmp), workers=0, api_env=dict(api_env or {}), load_balancer=False) as stack:
            (api_pid,) = await task_pids(stack, "api")
            fast = await throughput(stack.api_url, jpeg_of_size(image_bytes), requests, concurrency, progress)
            big = await memory(stack.api_url, api_pid, big_clients, big_bytes, progress) if big_clients else None
    return {"benchmark": "api", "machine": machine(), "api_env": dict(api_env or {}), "throughput": fast, "memory": big}


def render_tables(report: dict[str, Any]) -> list[Any]:
    from rich.table import Table

    t = report["throughput"]
    fast = Table(
        title=f"bench api — {t['requests']} uploads of {t['image_bytes'] / 1024:.0f} KB, {t['concurrency']} clients"
    )
    for col in ("accepted/s", "MB/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "statuses"):
        fast.add_column(col, justify="right")
    lat = t["latency_ms"]
    fast.add_row(
        f"{t['accepted_per_s']:.1f}",
        f"{t['mb_per_s']:.1f}",
        _whole(lat["p50"]),
        _whole(lat["p90"]),
        _whole(lat["p99"]),
        _whole(lat["max"]),
        str(t["statuses"]),
    )
    tables = [fast]
    m = report.get("memory")
    if m:
        big = Table(title=f"bench api — {m['clients']} clients × {m['bytes_each'] / 1e6:.0f} MB at once")
        for col in ("API RSS before MB", "API peak RSS MB", "goal", "MB/s", "seconds", "statuses"):
            big.add_column(col, justify="right")
        ok = "✓" if m["peak_rss_mb"] < RSS_GOAL_MB else "✗"
        big.add_row(
            f"{m['rss_before_mb']:.0f}",
            f"{m['peak_rss_mb']:.0f}",
            f"< {RSS_GOAL_MB:.0f} {ok}",
            f"{m['mb_per_s']:.0f}",
            f"{m['seconds']:.1f}",
            str(m["statuses"]),
        )
        big.caption = f"peak: {m['peak_source']}"
        tables.append(big)
    return tables
