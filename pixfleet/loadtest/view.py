"""The live view of ``pixfleet load``: counts, queue depth, workers and throughput, refreshed twice a second."""

from __future__ import annotations

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from pixfleet.loadtest.runner import LoadTest
from pixfleet.stats import percentile


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)


def render(test: LoadTest) -> RenderableType:
    reading = test.last_reading
    latencies = [r.latency_s for r in test.records if r.status == "succeeded" and r.latency_s is not None]
    p50 = percentile(latencies, 50)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("pixfleet load", f"{test.schedule.describe()} · preset {test.config.preset} → {test.config.api}")
    grid.add_row("elapsed", Text.assemble(f"{test.elapsed:.1f} s · ", (test.phase, "cyan")))
    grid.add_row(
        "jobs",
        f"submitted {len(test.records)} · accepted {sum(1 for r in test.records if r.job_id)} · "
        f"rejected {test.count('rejected')} · completed {test.count('succeeded')} · "
        f"failed {test.count('failed', 'unfinished')} · pending {test.count('queued', 'processing')}",
    )
    if reading is None:
        grid.add_row("queue", "?")
        grid.add_row("workers", "?")
    else:
        grid.add_row(
            "queue",
            f"{_n(reading.visible)} visible · {_n(reading.in_flight)} in flight · {_n(reading.delayed)} delayed · "
            f"{_n(reading.dead_letters)} in the DLQ",
        )
        grid.add_row("workers", f"{_n(reading.running_workers)} running (desired {_n(reading.desired_workers)})")
    grid.add_row(
        "throughput",
        f"{test.recent_throughput():.1f} jobs/s (last 10 s) · p50 latency {'–' if p50 is None else f'{p50:.2f} s'}",
    )
    return grid
