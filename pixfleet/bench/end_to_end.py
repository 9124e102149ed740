"""``pixfleet bench pipeline``: what the pipeline costs on top of the engine.

The same images are rendered twice: by the engine alone, in a fresh process
(:mod:`pixfleet.bench.contenders`, one run per image after a warm-up), and as jobs
through the embedded stack — uploaded through the API, queued, rendered by the
worker, outputs and manifests written. The worker's CPU per job (its process tree:
the event loop and its render pool, sampled from ``/proc`` before and after) over
the engine's CPU per job is the overhead of S3, SQS, JSON and manifests; goal ≤ 1.10×.
Images per second end to end is measured with 1 and with 2 worker tasks, next to the
physical limit of the machine: its cores divided by the engine's CPU per job plus the
emulator's and the API's CPU per job (measured during the same run) — the cores left to
render once they have taken their share.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from pixfleet.bench.corpus import CorpusImage, encode
from pixfleet.bench.measure import machine, tree_cpu_seconds
from pixfleet.bench.stack import running_stack, task_pids, upload, wait_jobs
from pixfleet.bench.transform import corpus_files, run_contender

OVERHEAD_GOAL = 1.10
GENERATED = (
    CorpusImage("12mp-a.jpg", 4000, 3000, "jpeg"),
    CorpusImage("12mp-b.jpg", 4000, 3000, "jpeg", progressive=True),
    CorpusImage("12mp-c.jpg", 4032, 3024, "jpeg"),
    CorpusImage("12mp-d.jpg", 4032, 3024, "jpeg", progressive=True),
)
UPLOAD_CONCURRENCY = 4


async def run_jobs(
    state_dir: Path, workers: int, files: Sequence[Path], preset: str, progress: Any = None
) -> dict[str, Any]:
    """Submit every file as a job to a fresh stack with ``workers`` worker tasks; measure CPU and wall time."""
    payloads = [f.read_bytes() for f in files]
    async with running_stack(state_dir, workers=workers) as stack:
        pids = await task_pids(stack, "worker")
        emulator_pid = stack.emulator.pid if stack.emulator else None
        others = {"api": await task_pids(stack, "api"), "emulator": [emulator_pid] if emulator_pid else []}
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            # Warm-up: one job per worker, so pools and connections are up before measuring.
            warm = await asyncio.gather(*(upload(http, stack.api_url, payloads[0], preset) for _ in range(workers)))
            await wait_jobs(http, stack.api_url, list(warm))
            task = progress.add_task(f"pipeline · {workers} worker(s)", total=len(files)) if progress else None
            cpu_before = sum(tree_cpu_seconds(p) for p in pids)
            others_before = {k: sum(tree_cpu_seconds(p) for p in v) for k, v in others.items()}
            started = time.monotonic()
            slots = asyncio.Semaphore(UPLOAD_CONCURRENCY)

            async def submit(data: bytes) -> str:
                async with slots:
                    return await upload(http, stack.api_url, data, preset)

            job_ids = await asyncio.gather(*(submit(p) for p in payloads))
            statuses = await wait_jobs(
                http, stack.api_url, list(job_ids), on_done=(lambda: progress.advance(task)) if progress else None
            )
            elapsed = time.monotonic() - started
            cpu = sum(tree_cpu_seconds(p) for p in pids) - cpu_before
            others_cpu = {k: sum(tree_cpu_seconds(p) for p in v) - others_before[k] for k, v in others.items()}
    failed = [s for s in statuses.values() if s["status"] != "succeeded"]
    in_worker = [s["timings_ms"]["transform_cpu"] for s in statuses.values() if s.get("timings_ms")]
    return {
        "workers": workers,
        "jobs": len(files),
        "failed": len(failed),
        "seconds": round(elapsed, 3),
        "images_per_s": round(len(files) / elapsed, 3),
        "worker_cpu_ms_per_job": round(cpu * 1000 / len(files), 2),
        "api_cpu_ms_per_job": round(others_cpu["api"] * 1000 / len(files), 2),
        "emulator_cpu_ms_per_job": round(others_cpu["emulator"] * 1000 / len(files), 2),
        "other_cores_busy": round(sum(others_cpu.values()) / elapsed, 3),
        "engine_cpu_in_worker_ms_per_job": round(sum(in_worker) / max(1, len(in_worker)), 2),
    }


async def benchmark(
    directory: Path | None, *, jobs: int, preset: str, worker_counts: Sequence[int] = (1, 2), progress: Any = None
) -> dict[str, Any]:
    """The report ``--json`` writes."""
    with tempfile.TemporaryDirectory(prefix="pixfleet-bench-pipeline-") as tmp:
        if directory is None:
            directory = Path(tmp) / "images"
            directory.mkdir()
            for i, spec in enumerate(GENERATED):
                (directory / spec.name).write_bytes(encode(spec, 7000 + i))
        images = corpus_files(directory)
        files = [images[i % len(images)] for i in range(jobs)]
        engine = await asyncio.to_thread(run_contender, "pixfleet", preset, images, repeat=1, save=None)
        cpu_by_file = {i["file"]: i["cpu_ms"] for i in engine["images"]}
        engine_ms = sum(cpu_by_file[f.name] for f in files) / len(files)
        runs = []
        for n in worker_counts:
            runs.append(await run_jobs(Path(tmp) / f"stack-{n}", n, files, preset, progress))
    cores = os.cpu_count() or 1
    for run in runs:
        run["overhead"] = round(run["worker_cpu_ms_per_job"] / engine_ms, 3) if engine_ms else None
        # What the machine could do at best: every core busy, rendering or serving the emulator and
        # API, which need their measured CPU per job too (moto's S3 is single-threaded Python).
        per_job_s = (engine_ms + run["api_cpu_ms_per_job"] + run["emulator_cpu_ms_per_job"]) / 1000
        limit = cores / per_job_s if engine_ms else None
        run["physical_limit_images_per_s"] = round(limit, 3) if limit else None
        run["of_physical_limit"] = round(run["images_per_s"] / limit, 3) if limit else None
    return {
        "benchmark": "pipeline",
        "images": [p.name for p in images],
        "jobs": jobs,
        "preset": preset,
        "machine": machine(),
        "engine_cpu_ms_per_job": round(engine_ms, 2),
        "cores": cores,
        "runs": runs,
        "overhead": runs[0]["overhead"] if runs else None,
        "goal": {"overhead_max": OVERHEAD_GOAL},
    }


def render_tables(report: dict[str, Any]) -> list[Any]:
    from rich.table import Table

    table = Table(title=f"bench pipeline — {report['jobs']} jobs, preset {report['preset']}")
    for col in ("workers", "img/s", "limit", "of limit", "worker ms", "overhead", "API+emu ms", "failed"):
        table.add_column(col, justify="right")
    for run in report["runs"]:
        ok = "✓" if run["overhead"] is not None and run["overhead"] <= OVERHEAD_GOAL else "✗"
        limit, share = run.get("physical_limit_images_per_s"), run.get("of_physical_limit")
        table.add_row(
            str(run["workers"]),
            f"{run['images_per_s']:.2f}",
            "" if limit is None else f"{limit:.2f}",
            "" if share is None else f"{share:.0%}",
            f"{run['worker_cpu_ms_per_job']:.1f}",
            f"{run['overhead']:.2f}× {ok}",
            f"{run['api_cpu_ms_per_job'] + run['emulator_cpu_ms_per_job']:.1f}",
            str(run["failed"]),
        )
    table.caption = (
        f"per job: engine alone {report['engine_cpu_ms_per_job']:.1f} ms CPU; "
        f"overhead = worker CPU ÷ that (goal ≤ {OVERHEAD_GOAL}×); "
        f"limit = {report['cores']} cores ÷ (engine + API + emulator CPU per job)"
    )
    return [table]
