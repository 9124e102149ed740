"""Fakes of pixfleet's own seams for fast orchestrator tests: a task runtime and a clock.

Only our own interfaces are faked (the :class:`Runtime` protocol and the orchestrator's
``clock``/``sleep``); nothing of AWS. :class:`FakeRuntime` keeps its "processes" across
orchestrators, as real processes outlive a crashed orchestrator, so adoption can be
tested by starting a second orchestrator on the same runtime and state directory.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.orchestrator.runtime import HealthResult, LaunchSpec, TaskHandle


async def settle(turns: int = 20) -> None:
    """Let every coroutine that can run now do so (the fakes never block on real I/O)."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def until(predicate: Callable[[], bool], what: str, turns: int = 2000) -> None:
    """Yield to the event loop until ``predicate()`` holds; fail after ``turns`` turns."""
    for _ in range(turns):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


class FakeClock:
    """``clock()`` and ``await sleep(s)`` on a virtual timeline that moves only with :meth:`advance`."""

    def __init__(self, now: float = 1_000.0):
        self.now = now
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), wake))
        await wake

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its own instant (in order) and letting it run."""
        target = self.now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, wake = heapq.heappop(self._sleepers)
            self.now = max(self.now, when)
            if not wake.done():
                wake.set_result(None)
                await settle()
        self.now = target
        await settle()


@dataclass
class Behaviour:
    """How the tasks of one task definition revision behave."""

    healthy: bool = True  # what their health check answers
    exit_code_at_start: int | None = None  # exit at once with this code (a crash loop)
    start_error: str | None = None  # the runtime cannot start them at all
    health_check_error: bool = False  # running their health check raises (as a runtime bug would)


@dataclass
class FakeProcess:
    spec: LaunchSpec
    env: dict[str, str]
    pid: int
    exited: asyncio.Future[int | None]
    healthy: bool
    health_check_error: bool = False
    in_flight: int = 0
    stops: int = 0
    health_checks: int = 0

    @property
    def alive(self) -> bool:
        return not self.exited.done()


@dataclass
class FakeRuntime:
    """A :class:`Runtime` whose tasks are futures: they exit when told to, or when stopped or killed."""

    name: str = "fake"
    behaviours: dict[str, Behaviour] = field(default_factory=dict)  # ``family:revision`` → behaviour
    processes: dict[str, FakeProcess] = field(default_factory=dict)  # task id → process
    _pids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    # --- what a test does to the tasks

    def running(self, family_revision: str | None = None) -> list[FakeProcess]:
        return [
            p
            for p in self.processes.values()
            if p.alive and family_revision in (None, f"{p.spec.family}:{p.spec.revision}")
        ]

    def exit(self, task_id: str, code: int | None) -> None:
        process = self.processes[task_id]
        if not process.exited.done():
            process.exited.set_result(code)

    # --- the Runtime protocol

    async def start(self, spec: LaunchSpec, resolve_env: Callable[[dict[int, int]], dict[str, str]]) -> TaskHandle:
        behaviour = self.behaviours.get(f"{spec.family}:{spec.revision}", Behaviour())
        if behaviour.start_error:
            raise RuntimeError(behaviour.start_error)
        ports = {container: host or 40000 + next(self._pids) for container, host in spec.port_mappings}
        exited: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        process = FakeProcess(
            spec, resolve_env(ports), next(self._pids), exited, behaviour.healthy, behaviour.health_check_error
        )
        self.processes[spec.task_id] = process
        if behaviour.exit_code_at_start is not None:
            exited.set_result(behaviour.exit_code_at_start)
        return TaskHandle(task_id=spec.task_id, pid=process.pid, ports=ports)

    async def wait(self, handle: TaskHandle) -> int | None:
        return await asyncio.shield(self.processes[handle.task_id].exited)

    async def stop(self, handle: TaskHandle, timeout: float) -> int | None:
        process = self.processes[handle.task_id]
        process.stops += 1
        self.exit(handle.task_id, 0)  # SIGTERM: a fake task always drains and exits cleanly
        return await self.wait(handle)

    def kill(self, handle: TaskHandle) -> None:
        self.exit(handle.task_id, -9)

    async def alive(self, handle: TaskHandle) -> bool:
        process = self.processes.get(handle.task_id)
        return process is not None and process.alive

    async def health_check(
        self, handle: TaskHandle, command: tuple[str, ...], env: dict[str, str], timeout: float
    ) -> HealthResult:
        process = self.processes[handle.task_id]
        process.health_checks += 1
        if process.health_check_error:
            raise ProcessLookupError()
        return HealthResult(process.healthy, json.dumps({"in_flight": process.in_flight}))

    async def strays(self, known: set[str]) -> list[TaskHandle]:
        return [TaskHandle(task_id=i, pid=p.pid) for i, p in self.processes.items() if p.alive and i not in known]


@dataclass
class FakeLoadBalancer:
    """A load balancer driver (:class:`~services.orchestrator.targets.LoadBalancerDriver`) that records calls.

    A registered target is ``initial`` until :meth:`pass_checks` (or at once with ``healthy_at_once``);
    a deregistration drains until :meth:`finish_drains` when ``hold_drains`` is set.
    """

    healthy_at_once: bool = False
    hold_drains: bool = False
    targets: dict[str, dict[str, tuple[str, int]]] = field(default_factory=dict)  # group → id → address
    states: dict[tuple[str, str], str] = field(default_factory=dict)
    log: list[tuple[str, str, str]] = field(default_factory=list)  # (what, group, target id)
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    def pass_checks(self, group: str | None = None) -> None:
        for (g, target_id), state in self.states.items():
            if state == "initial" and group in (None, g):
                self.states[(g, target_id)] = "healthy"

    def finish_drains(self) -> None:
        self._release.set()

    async def register(self, target_group: str, target_id: str, host: str, port: int) -> None:
        self.targets.setdefault(target_group, {})[target_id] = (host, port)
        self.states[(target_group, target_id)] = "healthy" if self.healthy_at_once else "initial"
        self.log.append(("register", target_group, target_id))

    async def deregister(self, target_group: str, target_id: str, drain_seconds: float | None = None) -> None:
        self.states[(target_group, target_id)] = "draining"
        self.log.append(("drain", target_group, target_id))
        if self.hold_drains:
            await self._release.wait()
        del self.targets[target_group][target_id]
        del self.states[(target_group, target_id)]
        self.log.append(("deregistered", target_group, target_id))

    async def target_health(self, target_group: str) -> list[Any]:
        return [
            {
                "id": i,
                "host": h,
                "port": p,
                "state": self.states[(target_group, i)],
                "reason": None,
                "description": None,
            }
            for i, (h, p) in self.targets.get(target_group, {}).items()
        ]

    def registered(self, target_group: str) -> dict[str, tuple[str, int]]:
        return dict(self.targets.get(target_group, {}))
