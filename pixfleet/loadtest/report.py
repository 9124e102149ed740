"""What a load test leaves behind: ``summary.json``, ``timeline.json`` and ``timeline.png``.

The timeline has one sample per second: queue depth (visible / in flight / delayed /
dead letters) and worker counts as the probe read them, plus submissions and
completions in that second (completions by the jobs' own finish times). The plot
puts queue depth and running workers on one time axis and completions per second
under it — the picture of the scaler at work.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections import Counter
from itertools import accumulate
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from pixfleet.loadtest.runner import LoadTest
from pixfleet.stats import percentile

PLOT_SIZE = (1200, 700)  # pixels of timeline.png
PLOT_DPI = 100


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_timeline(test: LoadTest) -> dict[str, Any]:
    """One sample per second with per-second rates and cumulative outcomes added."""
    finished = sorted((r.finished_at, r.status) for r in test.records if r.finished_at is not None)
    finish_times = [at for at, _ in finished]
    succeeded_before = list(accumulate((status == "succeeded" for _, status in finished), initial=0))
    submit_times = sorted(r.submitted for r in test.records)

    def between(times: list[float], start: float, end: float) -> int:
        return bisect_right(times, end) - bisect_right(times, start)

    samples, previous_t = [], None
    for sample in test.samples:
        t = sample["t"]
        end = test.started + t
        start = test.started + (previous_t if previous_t is not None else t - 1)
        span = max(1, t - previous_t) if previous_t is not None else 1
        done = bisect_right(finish_times, end)
        visible, in_flight, delayed = sample.get("visible"), sample.get("in_flight"), sample.get("delayed")
        depth = None if visible is None or in_flight is None else visible + in_flight + (delayed or 0)
        samples.append(
            {
                "t": t,
                "time": _iso(sample["at"]),
                "queue_visible": visible,
                "queue_in_flight": in_flight,
                "queue_delayed": delayed,
                "queue_depth": depth,
                "dead_letters": sample.get("dead_letters"),
                "running_workers": sample.get("running_workers"),
                "desired_workers": sample.get("desired_workers"),
                "submitted": sample["submitted"],
                "accepted": sample["accepted"],
                "rejected": sample["rejected"],
                "succeeded": succeeded_before[done],
                "failed": done - succeeded_before[done],
                "submitted_per_s": round(between(submit_times, start, end) / span, 3),
                "completed_per_s": round(between(finish_times, start, end) / span, 3),
            }
        )
        previous_t = t
    return {
        "interval_s": 1,
        "started_at": _iso(test.started),
        "metrics_source": test.probe.name if test.probe else None,
        "fields": {
            "queue_depth": "visible + in flight + delayed messages in the job queue",
            "completed_per_s": "jobs that finished (succeeded or failed) in this interval, by their finish time",
        },
        "samples": samples,
    }


def build_summary(
    test: LoadTest, timeline: dict[str, Any], *, max_failure_rate: float, settings: dict[str, Any]
) -> dict[str, Any]:
    records = test.records
    succeeded = [r for r in records if r.status == "succeeded"]
    ended = [r for r in records if r.finished_at is not None]
    latencies = [r.latency_s for r in succeeded if r.latency_s is not None]
    accepted = [r for r in records if r.job_id]
    bad = [r for r in records if r.status in ("rejected", "failed", "unfinished")]
    failure_rate = len(bad) / len(records) if records else 0.0
    last_finish = max((r.finished_at for r in ended if r.finished_at is not None), default=None)
    span = (last_finish - test.started) if last_finish else None
    last_answer = max((r.answered for r in accepted if r.answered), default=None)
    samples = timeline["samples"]

    def series(name: str) -> list[int]:
        return [s[name] for s in samples if s[name] is not None]

    workers = series("running_workers")
    return {
        **settings,
        "started_at": _iso(test.started),
        "finished_at": _iso(test.ended or test.started),
        "wall_s": round((test.ended or test.started) - test.started, 3),
        "interrupted": test.interrupted,
        "submitted": len(records),
        "accepted": len(accepted),
        "rejected": sum(1 for r in records if r.status == "rejected"),
        "succeeded": len(succeeded),
        "failed": sum(1 for r in records if r.status == "failed"),
        "unfinished": sum(1 for r in records if r.status == "unfinished"),
        "failure_rate": round(failure_rate, 6),
        "max_failure_rate": max_failure_rate,
        "passed": failure_rate <= max_failure_rate and bool(records),
        "errors_by_code": dict(Counter(r.error_code for r in bad if r.error_code).most_common()),
        "throughput": {
            "completed_per_s": round(len(ended) / span, 3) if span else None,
            "succeeded_per_s": round(len(succeeded) / span, 3) if span else None,
            "accepted_per_s": round(len(accepted) / (last_answer - test.started), 3)
            if last_answer and last_answer > test.started
            else None,
            "peak_completed_per_s": max((s["completed_per_s"] for s in samples), default=None),
            "uploaded_mib": round(sum(r.bytes for r in accepted) / 2**20, 2),
        },
        "latency_s": {
            "count": len(latencies),
            "p50": _round(percentile(latencies, 50)),
            "p95": _round(percentile(latencies, 95)),
            "p99": _round(percentile(latencies, 99)),
            "mean": _round(sum(latencies) / len(latencies)) if latencies else None,
            "max": _round(max(latencies, default=None)),
        },
        "queue": {
            "max_depth": max(series("queue_depth"), default=None),
            "max_visible": max(series("queue_visible"), default=None),
            "max_in_flight": max(series("queue_in_flight"), default=None),
            "dead_letters_at_end": samples[-1]["dead_letters"] if samples else None,
        },
        "workers": {
            "at_start": workers[0] if workers else None,
            "max": max(workers, default=None),
            "at_end": workers[-1] if workers else None,
        },
        "schedule_max_lag_jobs": test.max_lag,
        "metrics_source": timeline["metrics_source"],
        "metrics_read_failures": test.probe_failures,
    }


def _dash(value: float | None) -> str:
    return "–" if value is None else str(value)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def plot_timeline(timeline: dict[str, Any], summary: dict[str, Any], path: Path) -> Path:
    """Queue depth and running workers over time (top), completions per second (bottom), as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    samples = timeline["samples"]
    nan = float("nan")

    def col(name: str) -> list[float]:
        return [nan if s[name] is None else s[name] for s in samples]

    t = [s["t"] for s in samples]
    fig = Figure(figsize=(PLOT_SIZE[0] / PLOT_DPI, PLOT_SIZE[1] / PLOT_DPI), dpi=PLOT_DPI)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    visible, in_flight = col("queue_visible"), col("queue_in_flight")
    top.stackplot(
        t,
        [0 if math.isnan(v) else v for v in visible],
        [0 if math.isnan(v) else v for v in in_flight],
        labels=["queue: visible", "queue: in flight"],
        colors=["#9ecae1", "#3182bd"],
        alpha=0.85,
        step="post",
    )
    top.step(t, col("dead_letters"), where="post", color="#d62728", linestyle="--", label="dead letters")
    top.set_ylabel("messages")
    top.set_ylim(bottom=0)
    workers_axis = top.twinx()
    workers_axis.step(t, col("running_workers"), where="post", color="#e6550d", linewidth=2.5, label="running workers")
    workers_axis.step(
        t, col("desired_workers"), where="post", color="#fdae6b", linewidth=1.2, linestyle=":", label="desired workers"
    )
    workers_axis.set_ylabel("workers")
    top_workers = max([v for v in col("running_workers") + col("desired_workers") if not math.isnan(v)], default=1)
    workers_axis.set_ylim(0, top_workers + 1)
    workers_axis.yaxis.get_major_locator().set_params(integer=True)
    handles = top.get_legend_handles_labels()[0] + workers_axis.get_legend_handles_labels()[0]
    labels = top.get_legend_handles_labels()[1] + workers_axis.get_legend_handles_labels()[1]
    top.legend(handles, labels, loc="upper right", fontsize=8, ncols=2)
    top.grid(alpha=0.3)

    # A rate sampled at t counts the interval that ends at t: draw it over that interval.
    spans = [t[0] + 1 if i == 0 else t[i] - t[i - 1] for i in range(len(t))] if t else []
    bottom.bar(
        [x - s for x, s in zip(t, spans, strict=True)],
        [0 if math.isnan(v) else v for v in col("completed_per_s")],
        width=[s * 0.9 for s in spans],
        align="edge",
        color="#31a354",
        label="completed / s",
    )
    bottom.step(t, col("submitted_per_s"), where="pre", color="#636363", linewidth=1, label="submitted / s")
    bottom.set_xlim(left=0)
    bottom.set_xlabel("seconds since start")
    bottom.set_ylabel("jobs / s")
    bottom.legend(loc="upper right", fontsize=8)
    bottom.grid(alpha=0.3)

    latency = summary["latency_s"]
    throughput = summary["throughput"]["completed_per_s"]
    fig.suptitle(
        f"pixfleet load — {summary.get('schedule', '')}, preset {summary.get('preset', '')}: "
        f"{summary['succeeded']}/{summary['submitted']} succeeded, "
        f"{throughput if throughput is not None else '–'} jobs/s, "
        f"p50 {_dash(latency['p50'])} s, p95 {_dash(latency['p95'])} s",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    return path


def write_outputs(out: Path, test: LoadTest, summary: dict[str, Any], timeline: dict[str, Any]) -> dict[str, Path]:
    """``summary.json``, ``timeline.json``, ``timeline.png`` and ``jobs.json`` (every submission) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("summary.json", "timeline.json", "timeline.png", "jobs.json")}
    paths["summary.json"].write_text(json.dumps(summary, indent=2) + "\n")
    paths["timeline.json"].write_text(json.dumps(timeline, indent=1) + "\n")
    paths["jobs.json"].write_text(json.dumps([r.public() for r in test.records], indent=1) + "\n")
    plot_timeline(timeline, summary, paths["timeline.png"])
    return paths


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title="load test summary", show_header=False, title_justify="left")
    latency, throughput = summary["latency_s"], summary["throughput"]

    def fmt(value: Any, unit: str = "") -> str:
        return "–" if value is None else f"{value}{unit}"

    table.add_row(
        "schedule",
        f"{summary.get('schedule')} · preset {summary.get('preset')} · concurrency {summary.get('concurrency')}",
    )
    table.add_row(
        "jobs",
        f"{summary['submitted']} submitted, {summary['accepted']} accepted, {summary['rejected']} rejected, "
        f"{summary['succeeded']} succeeded, {summary['failed']} failed, {summary['unfinished']} unfinished",
    )
    table.add_row(
        "throughput",
        f"{fmt(throughput['completed_per_s'])} jobs/s (peak {fmt(throughput['peak_completed_per_s'])}/s), "
        f"accepted {fmt(throughput['accepted_per_s'])}/s, {throughput['uploaded_mib']} MiB uploaded",
    )
    table.add_row(
        "latency",
        f"p50 {fmt(latency['p50'], ' s')}, p95 {fmt(latency['p95'], ' s')}, p99 {fmt(latency['p99'], ' s')}, "
        f"max {fmt(latency['max'], ' s')}",
    )
    table.add_row(
        "queue / workers",
        f"max depth {fmt(summary['queue']['max_depth'])}, workers {fmt(summary['workers']['at_start'])} → "
        f"max {fmt(summary['workers']['max'])} → {fmt(summary['workers']['at_end'])}",
    )
    errors = ", ".join(f"{code} × {n}" for code, n in summary["errors_by_code"].items()) or "none"
    table.add_row("errors", errors)
    verdict = "[green]passed[/]" if summary["passed"] else "[red]failed[/]"
    table.add_row("failure rate", f"{summary['failure_rate']:.2%} (max {summary['max_failure_rate']:.2%}) {verdict}")
    return table
