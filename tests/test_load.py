"""``pixfleet load``: schedules (pure), bad input (exit 2), and real runs against the embedded stack."""

from __future__ import annotations

import itertools

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from pipeline.net import free_port
from pixfleet.loadtest.report import PLOT_SIZE
from pixfleet.loadtest.schedule import Burst, Constant, Ramp, parse_schedule
from pixfleet.stack import EmbeddedConfig, EmbeddedStack

PIXFLEET = [sys.executable, "-m", "pixfleet"]


# --- pure logic --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "duration", "expected", "is_error"),
    [
        ("constant:5", 10, Constant(5, 10), False),
        ("5", 10, Constant(5, 10), False),
        ("constant:2.5/s", 4, Constant(2.5, 4), False),
        ("ramp:1-20", 30, Ramp(1, 20, 30), False),
        ("ramp:0..10", 30, Ramp(0, 10, 30), False),
        ("ramp:20-1", 30, Ramp(20, 1, 30), False),
        ("burst:200", 0, Burst(200), False),
        ("BURST:3", 10, Burst(3), False),
        ("constant:0", 10, None, True),
        ("constant:-1", 10, None, True),
        ("constant:fast", 10, None, True),
        ("constant:nan", 10, None, True),
        ("constant:5", 0, None, True),
        ("ramp:5", 10, None, True),
        ("ramp:0-0", 10, None, True),
        ("burst:0", 10, None, True),
        ("burst:many", 10, None, True),
        ("wave:3", 10, None, True),
        ("", 10, None, True),
    ],
)
def test_parse_schedule(text: str, duration: float, expected: object, is_error: bool) -> None:
    if is_error:
        with pytest.raises(ValueError):
            parse_schedule(text, duration)
    else:
        assert parse_schedule(text, duration) == expected


@pytest.mark.parametrize(
    ("schedule", "checkpoints", "total"),
    [
        (Constant(5, 10), {0: 1, 0.19: 1, 0.2: 2, 1: 6, 9.99: 50, 100: 50}, 50),
        (Constant(0.5, 3), {0: 1, 1.9: 1, 2: 2, 3: 1}, 1),  # total caps every checkpoint
        (Ramp(0, 10, 10), {0: 1, 1: 1, 2: 3, 10: 50, 20: 50}, 50),  # t²/2 submitted by t, the first at 0
        (Ramp(10, 0, 10), {1: 10, 10: 50}, 50),
        (Burst(7), {0: 7, 5: 7}, 7),
    ],
)
def test_schedule_due(schedule: object, checkpoints: dict[float, int], total: int) -> None:
    assert schedule.total == total  # type: ignore[attr-defined]
    for t, due in checkpoints.items():
        assert schedule.due(t) == min(due, total), t  # type: ignore[attr-defined]
    assert schedule.due(-1) == 0  # type: ignore[attr-defined]


# --- bad input: a clear message and exit status 2 ----------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--schedule", "sometimes"], "unknown schedule"),
        (["--schedule", "ramp:5"], "ramp:FROM-TO"),
        (["--images", "{empty}"], "no image files"),
        (["--images", "{missing}"], "no such directory"),
        (["--api", "{dead}"], "cannot reach the API"),
        ([], "no running stack"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    values = {
        "empty": str(tmp_path / "empty"),
        "missing": str(tmp_path / "missing"),
        "dead": f"http://127.0.0.1:{free_port()}",
    }
    env = {**os.environ, "PIXFLEET_STATE_DIR": str(tmp_path / "no-stack")}
    env.pop("PIXFLEET_API_URL", None)
    args = [a.format(**values) for a in args]
    if "--api" not in args and "--images" in args:
        args += ["--api", values["dead"]]
    run = subprocess.run([*PIXFLEET, "load", *args], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert message in " ".join(run.stderr.split())  # the message is wrapped at 80 columns
    assert "Traceback" not in run.stderr


# --- real runs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def load_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedStack]:
    """Workers 1..3 at 5 messages per task; no scale-in during the module (long cooldown)."""
    config = EmbeddedConfig(
        state_dir=tmp_path_factory.mktemp("load"),
        workers=1,
        max_workers=3,
        api_port=0,
        scaling={"TargetValue": 5, "ScaleInCooldown": 300},
    )
    async with EmbeddedStack(config) as stack:
        yield stack


async def pixfleet(stack: EmbeddedStack, *args: str, timeout: float = 300) -> tuple[int, str, str]:
    """Run the command line against ``stack`` (found through its stack.json) without blocking the loop."""
    env = {**os.environ, "PIXFLEET_STATE_DIR": str(stack.state_dir), "COLUMNS": "120"}
    env.pop("PIXFLEET_API_URL", None)
    process = await asyncio.create_subprocess_exec(
        *PIXFLEET, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode or 0, out.decode(), err.decode()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_ramp_draws_the_timeline_and_passes(load_stack: EmbeddedStack, tmp_path: Path) -> None:
    out = tmp_path / "load"
    code, _, err = await pixfleet(
        load_stack, "load", "--schedule", "ramp:2-10", "--duration", "15", "--concurrency", "4", "--out", str(out)
    )
    assert code == 0, err
    assert "load test summary" in err

    summary = json.loads((out / "summary.json").read_text())
    total = 2 * 15 + 8 * 15 // 2  # ∫ (2 + 8t/15) dt over 15 s
    assert summary["submitted"] == summary["accepted"] == summary["succeeded"] == total
    assert summary["failed"] == summary["rejected"] == summary["unfinished"] == 0
    assert summary["errors_by_code"] == {} and summary["failure_rate"] == 0 and summary["passed"]
    latency = summary["latency_s"]
    assert latency["count"] == total
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert summary["throughput"]["completed_per_s"] > 0 and summary["throughput"]["peak_completed_per_s"] >= 1
    assert summary["metrics_source"] == "orchestrator"
    assert summary["workers"]["max"] >= 1 and summary["queue"]["max_depth"] >= 1
    assert summary["schedule"] == "ramp 2/s → 10/s over 15 s" and summary["preset"] == "thumbs"

    timeline = json.loads((out / "timeline.json").read_text())
    samples = timeline["samples"]
    ts = [s["t"] for s in samples]
    assert ts == sorted(set(ts)) and ts[0] == 0 and ts[-1] >= 15  # one sample per second, from the start to the end
    assert len(samples) >= 0.8 * (ts[-1] + 1)  # a slow read may skip a second, not many
    readings = [s for s in samples if s["running_workers"] is not None]
    assert len(readings) >= 0.8 * len(samples)
    for s in readings:
        assert s["queue_depth"] == s["queue_visible"] + s["queue_in_flight"] + s["queue_delayed"]
        assert s["dead_letters"] == 0 and s["running_workers"] >= 1
    # Every completion falls in exactly one sample's interval.
    spans = [1] + [b - a for a, b in itertools.pairwise(ts)]
    assert round(sum(s["completed_per_s"] * span for s, span in zip(samples, spans, strict=True))) == total
    assert samples[-1]["succeeded"] == total and samples[-1]["submitted"] == total

    with Image.open(out / "timeline.png") as plot:
        plot.load()
        assert plot.format == "PNG" and plot.size == PLOT_SIZE
        assert len(plot.getcolors(1 << 16) or range(1 << 16)) > 50  # a drawing, not a blank canvas

    jobs = json.loads((out / "jobs.json").read_text())
    assert len(jobs) == total and all(j["status"] == "succeeded" and j["latency_s"] is not None for j in jobs)


@pytest.mark.asyncio(loop_scope="session")
async def test_failures_over_the_threshold_exit_1(load_stack: EmbeddedStack, tmp_path: Path) -> None:
    out = tmp_path / "poison"
    code, stdout, err = await pixfleet(
        load_stack,
        "load",
        "--schedule",
        "burst:4",
        "--poison",
        "1",
        "--max-failure-rate",
        "0.5",
        "--out",
        str(out),
        "--json",
    )
    assert code == 1, err
    summary = json.loads(stdout)
    assert summary["failed"] == 4 and summary["errors_by_code"] == {"corrupt_image": 4}
    assert summary["failure_rate"] == 1.0 and not summary["passed"]
    assert (out / "timeline.png").exists()
