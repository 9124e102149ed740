"""``pixfleet bench lb`` — the API behind the load balancer under steady load: spread, deploy, kill.

One embedded stack with HAProxy as the edge and two API tasks on dynamic ports. A steady
load of uploads (``rate`` per second, a small JPEG each, the ``thumbs`` preset) runs
through three phases, one after the other:

* **steady** — requests per API task over ``steady`` seconds, from HAProxy's own
  per-target counters (goal: every task within ±20 % of the mean);
* **rolling deploy** — a new revision of the API task definition, rolled out under the
  load: new tasks start, pass their health checks, become targets, and only then are
  the old ones drained and stopped (goal: zero failed requests);
* **task kill** — ``pixfleet task kill`` of one API task (SIGKILL) under the load: what
  it was serving at that instant fails, nothing else. Requests open while the kill call
  ran are the ones it may have been serving (their failures are reported, next to the
  task's session count read from HAProxy just before); goal: zero failures among the
  requests that started after the kill.

A request has failed when it raised or answered outside 2xx. Seconds are wall clock on
a shared 2-core machine: the counts are the result, the durations only context.
"""

from __future__ import annotations

import asyncio
import io
import json
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from rich.table import Table

from pixfleet.bench.measure import machine
from pixfleet.stack import EmbeddedConfig, EmbeddedStack

GROUP = "pixfleet-api"
SPREAD_GOAL = 0.20


def small_jpeg(side: int = 96) -> bytes:
    """A JPEG of a few KB: the whole upload fits one HAProxy buffer, so a refused connection is retried."""
    from PIL import Image

    im = Image.effect_noise((side, side), 60).convert("RGB")
    out = io.BytesIO()
    im.save(out, "JPEG", quality=80)
    return out.getvalue()


@dataclass
class Outcome:
    started: float
    ended: float
    status: int | None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.status is None or not 200 <= self.status < 300


@dataclass
class SteadyLoad:
    """Uploads at ``rate`` per second (at most ``concurrency`` at once) until :meth:`stop`."""

    api_url: str
    rate: float
    body: bytes
    concurrency: int = 32
    outcomes: list[Outcome] = field(default_factory=list)
    started: float = 0.0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        pending: set[asyncio.Task[None]] = set()
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            start, sent, self.started = time.monotonic(), 0, time.time()
            while not self._stop.is_set():
                due = int((time.monotonic() - start) * self.rate) + 1
                while sent < due and not self._stop.is_set():
                    await slots.acquire()
                    job = asyncio.create_task(self._one(http, slots))
                    pending.add(job)
                    job.add_done_callback(pending.discard)
                    sent += 1
                next_at = start + sent / self.rate
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), max(0.0, next_at - time.monotonic()))
            await asyncio.gather(*pending, return_exceptions=True)

    async def _one(self, http: aiohttp.ClientSession, slots: asyncio.Semaphore) -> None:
        started = time.time()
        try:
            async with http.post(
                f"{self.api_url}/v1/images?preset=thumbs", data=self.body, headers={"Content-Type": "image/jpeg"}
            ) as response:
                await response.read()
                self.outcomes.append(Outcome(started, time.time(), response.status))
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.outcomes.append(Outcome(started, time.time(), None, f"{type(exc).__name__}: {exc}"[:200]))
        finally:
            slots.release()

    def stop(self) -> None:
        self._stop.set()

    def window(self, since: float, until: float) -> list[Outcome]:
        """Requests that started in [since, until)."""
        return [o for o in self.outcomes if since <= o.started < until]

    def in_flight_at(self, instant: float) -> list[Outcome]:
        """Requests that had started and not ended at ``instant``."""
        return [o for o in self.outcomes if o.started < instant < o.ended]


def spread(counts: dict[str, int]) -> float:
    """The largest relative deviation of a task's count from the mean (0.1 = within ±10 %)."""
    if not counts:
        return 0.0
    mean = sum(counts.values()) / len(counts)
    return max(abs(c - mean) / mean for c in counts.values()) if mean else 0.0


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    failed = [o for o in outcomes if o.failed]
    errors: dict[str, int] = {}
    for o in failed:
        key = o.error.split(":")[0] if o.error else f"HTTP {o.status}"
        errors[key] = errors.get(key, 0) + 1
    return {"requests": len(outcomes), "failed": len(failed), "errors": errors}


async def _totals(stack: EmbeddedStack) -> dict[str, int]:
    assert stack.load_balancer is not None
    return {name: stat.total for name, stat in (await stack.load_balancer.server_stats(GROUP)).items()}


async def _wait(predicate: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not after {timeout:.0f}s: {what}")
        await asyncio.sleep(0.2)


async def _in_service(stack: EmbeddedStack, count: int) -> bool:
    """The API service steady with ``count`` tasks, each a healthy target, one deployment."""
    api = (await stack.services())["api"]
    (lb,) = api["loadBalancers"]
    healthy = [d for d in lb["targetHealthDescriptions"] if d["TargetHealth"]["State"] == "healthy"]
    return api["steady"] and len(api["deployments"]) == 1 and len(healthy) == count == api["runningCount"]


async def steady_phase(stack: EmbeddedStack, load: SteadyLoad, seconds: float) -> dict[str, Any]:
    before, t0 = await _totals(stack), time.time()
    await asyncio.sleep(seconds)  # the measurement window itself, not a synchronisation
    after, t1 = await _totals(stack), time.time()
    counts = {task[:8]: after[task] - before.get(task, 0) for task in after}
    return {
        "seconds": round(t1 - t0, 1),
        "per_task": counts,
        "spread": round(spread(counts), 3),
        "ended": t1,
        **summary(load.window(load.started, t1)),
    }


async def deploy_phase(stack: EmbeddedStack, load: SteadyLoad, timeout: float) -> dict[str, Any]:
    doc = json.loads((stack.state_dir / "config" / "taskdefs" / "api.json").read_text())
    env = doc["containerDefinitions"][0].setdefault("environment", [])
    env.append({"name": "PIXFLEET_BENCH_REVISION", "value": str(time.time_ns())})
    revision = await stack.control.register_task_definition(doc)
    old = {t["taskId"] for t in await stack.tasks("api")}
    t0 = time.time()
    await stack.control.update_service("api", task_definition=revision)

    async def done() -> bool:
        tasks = {t["taskId"] for t in await stack.tasks("api")}
        return not (tasks & old) and await _in_service(stack, 2)

    await _wait(done, f"the rolling deploy to {revision}", timeout)
    t1 = time.time()
    return {"revision": revision, "seconds": round(t1 - t0, 1), "started": t0, "ended": t1}


async def kill_phase(stack: EmbeddedStack, load: SteadyLoad, timeout: float) -> dict[str, Any]:
    balancer = stack.load_balancer
    assert balancer is not None
    victim = (await stack.tasks("api"))[0]["taskId"]
    stats = await balancer.server_stats(GROUP)
    in_flight = stats[victim].sessions if victim in stats else 0
    t0 = time.time()
    await stack.control.kill_task(victim)
    killed = time.time()  # SIGKILL sent by now (the orchestrator kills before it answers)

    async def out() -> bool:  # HAProxy's own view: marked down, drained or deregistered
        stat = (await balancer.server_stats(GROUP)).get(victim)
        return stat is None or not stat.status.startswith("UP")

    async def replaced() -> bool:
        running = {t["taskId"] for t in await stack.tasks("api")}
        return victim not in running and await _in_service(stack, 2)

    await _wait(out, "the killed task out of the target group", timeout)
    t_out = time.time()
    await _wait(replaced, "a replacement in service", timeout)
    t1 = time.time()
    return {
        "task": victim[:8],
        "in_flight_at_kill": in_flight,
        "out_of_service_s": round(t_out - t0, 1),
        "replaced_s": round(t1 - t0, 1),
        "started": t0,
        "killed": killed,
        "ended": t1,
    }


async def benchmark(*, rate: float, steady: float, timeout: float = 180.0, progress: Any = None) -> dict[str, Any]:
    """The report ``--json`` writes."""
    with tempfile.TemporaryDirectory(prefix="pixfleet-bench-lb-") as tmp:
        config = EmbeddedConfig(state_dir=Path(tmp), api_port=0, workers=1, max_workers=1, load_balancer=True)
        async with EmbeddedStack(config) as stack:
            load = SteadyLoad(stack.api_url, rate, small_jpeg())
            runner = asyncio.create_task(load.run())
            try:
                step = progress.add_task("steady load", total=3) if progress else None
                phases = {"steady": await steady_phase(stack, load, steady)}
                if progress:
                    progress.update(step, advance=1, description="rolling deploy")
                phases["deploy"] = await deploy_phase(stack, load, timeout)
                if progress:
                    progress.update(step, advance=1, description="task kill")
                phases["kill"] = await kill_phase(stack, load, timeout)
                if progress:
                    progress.update(step, advance=1, description="done")
            finally:
                load.stop()
                await runner
    # Every request counted once, by when it started: the deploy from its start to the kill, the
    # kill from then to the end, plus the requests in flight at the kill instant (the victim's among them).
    # The victim's in-flight requests: those open at any moment of the kill call (before it, SIGKILL).
    kill = phases["kill"]
    at_kill = [o for o in load.outcomes if o.started < kill["killed"] and o.ended > kill["started"]]
    phases["deploy"].update(
        summary([o for o in load.window(phases["steady"]["ended"], kill["started"]) if o.ended <= kill["started"]])
    )
    after = load.window(kill["killed"], float("inf"))
    kill.update(summary(at_kill + after))
    kill["failed_in_flight"] = sum(1 for o in at_kill if o.failed)
    kill["failed_after"] = sum(1 for o in after if o.failed)
    return {
        "benchmark": "lb",
        "machine": machine(),
        "rate": rate,
        "total": summary(load.outcomes),
        **phases,
        "goals": {
            "spread": SPREAD_GOAL,
            "deploy_failed": 0,
            "kill_failed_after": 0,
        },
    }


def verdicts(report: dict[str, Any]) -> dict[str, bool]:
    return {
        "spread": report["steady"]["spread"] <= SPREAD_GOAL and report["steady"]["failed"] == 0,
        "deploy": report["deploy"]["failed"] == 0,
        "kill": report["kill"]["failed_after"] == 0,
    }


def render_tables(report: dict[str, Any]) -> list[Any]:
    ok = verdicts(report)
    mark = {True: "[green]met[/]", False: "[red]missed[/]"}
    steady, deploy, kill = report["steady"], report["deploy"], report["kill"]
    table = Table(title=f"API behind HAProxy, {report['rate']:g} uploads/s", title_justify="left", box=None)
    for header in ("phase", "requests", "failed", "measured", "goal", ""):
        table.add_column(header, overflow="fold")
    per_task = " / ".join(str(v) for v in steady["per_task"].values())
    table.add_row(
        "steady", str(steady["requests"]), str(steady["failed"]), f"{per_task} (±{steady['spread']:.0%})", "±20 %",
        mark[ok["spread"]],
    )  # fmt: skip
    table.add_row(
        "deploy", str(deploy["requests"]), str(deploy["failed"]), f"{deploy['seconds']:.0f} s", "0 failed",
        mark[ok["deploy"]],
    )  # fmt: skip
    table.add_row(
        "kill", str(kill["requests"]), str(kill["failed"]),
        f"{kill['failed_in_flight']} in flight + {kill['failed_after']} after", "0 after", mark[ok["kill"]],
    )  # fmt: skip
    notes = Table.grid(padding=(0, 1))
    notes.add_column(style="dim", overflow="fold")
    notes.add_row(
        f"kill: {kill['in_flight_at_kill']} requests on the task just before (HAProxy); out of service after"
        f" {kill['out_of_service_s']:.1f} s, replaced after {kill['replaced_s']:.0f} s; deploy to {deploy['revision']}"
    )
    errors = {**deploy["errors"], **kill["errors"]}
    if errors:
        notes.add_row("errors: " + ", ".join(f"{k} ×{v}" for k, v in errors.items()))
    return [table, notes]
