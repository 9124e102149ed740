"""The orchestrator's control loop with a fake runtime and a fake clock: no processes, no AWS, no waiting.

Rolling deploys within minimumHealthyPercent / maximumPercent, scale-in choosing idle
tasks, the launch throttle, the circuit breaker's rollback, and adoption after a
restart. The same behaviour runs end to end (real processes, real moto) in
test_orchestrator.py and test_worker_lifecycle.py; these tests pin the rules.
"""

from __future__ import annotations

import copy
import itertools
import math
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from fakes import Behaviour, FakeClock, FakeRuntime, settle, until
from infra.credentials import TemporaryCredentials
from services.orchestrator.credentials import CredentialVault
from services.orchestrator.model import (
    DeploymentConfig,
    DeploymentStatus,
    RolloutState,
    ServiceConfig,
    Task,
    TaskState,
)
from services.orchestrator.orchestrator import Orchestrator
from services.orchestrator.taskdefs import TaskDefinitionRegistry

pytestmark = pytest.mark.asyncio(loop_scope="session")

APP: dict[str, Any] = {
    "family": "app",
    "taskRoleArn": "pixfleet-worker",
    "cpu": "256",
    "memory": "512",
    "containerDefinitions": [
        {
            "name": "app",
            "image": "app",
            "command": ["app"],
            "environment": [{"name": "VERSION", "value": "1"}],
            "stopTimeout": 5,
            "healthCheck": {"command": ["CMD", "check"], "interval": 5, "timeout": 2, "retries": 2},
        }
    ],
}


def app_revision(registry: TaskDefinitionRegistry, version: str) -> str:
    doc = copy.deepcopy(APP)
    doc["containerDefinitions"][0]["environment"] = [{"name": "VERSION", "value": version}]
    return registry.register(doc).key


async def no_assume(role_arn: str, session_name: str) -> TemporaryCredentials:
    raise AssertionError("no task asks for credentials in these tests")


@dataclass
class Fleet:
    orch: Orchestrator
    runtime: FakeRuntime
    clock: FakeClock
    registry: TaskDefinitionRegistry
    state_dir: Path
    closed: bool = False

    @property
    def worker(self) -> Any:
        return self.orch.services["worker"]

    async def step(self, seconds: float = 1.0) -> None:
        """A second passes (health checks run), then one control-loop tick, then the stops it began finish."""
        await self.clock.advance(seconds)
        await self.orch.tick()
        await settle()

    async def steady(self, steps: int = 20) -> None:
        for _ in range(steps):
            if self.worker.steady:
                return
            await self.step()
        raise AssertionError(f"not steady after {steps} steps: {self.messages()[-5:]}")

    def messages(self) -> list[str]:
        """The worker's service events, oldest first, without their "(service worker)" prefix."""
        events = reversed(self.orch.events.newest_first(10_000, "worker"))
        return [e.message.removeprefix("(service worker) ") for e in events]

    def alive(self) -> list[Any]:
        return self.orch.alive_tasks(self.worker)

    def healthy(self) -> list[Any]:
        return [t for t in self.alive() if self.orch.is_healthy(t)]

    async def close(self, *, stop_tasks: bool = True) -> None:
        self.closed = True
        await self.orch.close(stop_tasks=stop_tasks)


FleetFactory = Callable[..., Awaitable[Fleet]]


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[FleetFactory]:
    """Builds orchestrators of one ``worker`` service on fake runtimes; closes what it built."""
    made: list[Fleet] = []

    async def make(
        *,
        desired: int = 2,
        deployment: DeploymentConfig | None = None,
        runtime: FakeRuntime | None = None,
        clock: FakeClock | None = None,
        registry: TaskDefinitionRegistry | None = None,
    ) -> Fleet:
        registry = registry or TaskDefinitionRegistry()
        first = app_revision(registry, "1")
        clock = clock or FakeClock()
        runtime = runtime or FakeRuntime()
        orch = Orchestrator(
            cluster="test",
            registry=registry,
            services=[ServiceConfig("worker", first, desired, deployment=deployment or DeploymentConfig())],
            runtime=runtime,
            vault=CredentialVault(no_assume),
            metric_source=None,
            state_dir=tmp_path / "orchestrator",
            task_env={"PIXFLEET_QUEUE_URL": "http://queue"},
            endpoint_url="http://127.0.0.1:9",
            role_arn=lambda name: f"arn:aws:iam::123456789012:role/{name}",
            tick_interval=3600,  # the tests tick by hand
            clock=clock,
            sleep=clock.sleep,
        )
        await orch.restore()
        made.append(Fleet(orch, runtime, clock, registry, tmp_path / "orchestrator"))
        return made[-1]

    yield make
    for f in made:
        if not f.closed:
            await f.close()


# --- rolling deploys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("desired", "min_healthy", "max_percent"),
    [(4, 50, 150), (4, 100, 200), (3, 100, 134), (2, 0, 100), (5, 60, 120)],
)
async def test_a_rolling_deploy_stays_within_minimum_healthy_and_maximum_percent(
    fleet: FleetFactory, desired: int, min_healthy: int, max_percent: int
) -> None:
    f = await fleet(desired=desired, deployment=DeploymentConfig(min_healthy, max_percent))
    await f.steady()
    first = {t.task_id for t in f.alive()}
    v2 = app_revision(f.registry, "2")
    f.orch.update_service("worker", task_definition=v2)
    ceiling = max(desired, desired * max_percent // 100)
    floor = math.ceil(desired * min_healthy / 100)
    for _ in range(40):
        await f.step()
        assert len(f.alive()) <= ceiling
        assert len(f.healthy()) >= floor
        if f.worker.steady:
            break
    assert f.worker.steady and {t.taskdef for t in f.alive()} == {v2}
    assert not first & {t.task_id for t in f.alive()}
    replaced = [f.orch.tasks[i] for i in first]
    assert all(t.stop_reason == f"Deployment {f.worker.primary.deployment_id} replaced this task" for t in replaced)
    assert all(t.exit_code == 0 for t in replaced)
    assert f"deployment {f.worker.primary.deployment_id} ({v2}) completed." in f.messages()
    await f.step()  # the replaced deployment is retired once none of its tasks is even stopping
    assert [d.status for d in f.worker.deployments] == [DeploymentStatus.PRIMARY]


async def test_old_tasks_wait_for_new_ones_to_pass_their_health_checks(fleet: FleetFactory) -> None:
    f = await fleet(desired=2, deployment=DeploymentConfig(100, 200))
    await f.steady()
    v2 = app_revision(f.registry, "2")
    f.orch.update_service("worker", task_definition=v2)
    await f.orch.tick()  # starts two app:2 tasks, stops nothing: they are not healthy yet
    await settle()
    assert sorted(t.taskdef for t in f.alive()) == ["app:1", "app:1", v2, v2]
    assert len(f.runtime.running("app:1")) == 2
    await f.step()  # their first health check passes: now the old ones go
    assert {t.taskdef for t in f.alive()} == {v2}


# --- scale in -------------------------------------------------------------------------------


async def test_scale_in_stops_idle_tasks_first(fleet: FleetFactory) -> None:
    f = await fleet(desired=3)
    await f.steady()
    busy = f.alive()[1]
    f.runtime.processes[busy.task_id].in_flight = 2
    await f.clock.advance(5)  # a health check reports the job in flight
    assert busy.in_flight == 2
    f.orch.update_service("worker", desired_count=1)
    await f.step()
    assert [t.task_id for t in f.alive()] == [busy.task_id]
    drained = [t for t in f.orch.tasks.values() if t.state == TaskState.STOPPED]
    assert len(drained) == 2
    assert all(t.stop_reason == "Scaling activity initiated by (service worker)" for t in drained)
    assert any(m.startswith("has begun draining 2 tasks") for m in f.messages())


# --- the launch throttle ----------------------------------------------------------------------


async def test_a_revision_that_never_starts_is_throttled(fleet: FleetFactory) -> None:
    runtime = FakeRuntime(behaviours={"app:1": Behaviour(exit_code_at_start=1)})
    f = await fleet(desired=1, runtime=runtime)
    for _ in range(20):
        await f.step()
    starts = sorted(t.started_at for t in f.orch.tasks.values() if t.started_at is not None)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps == [1, 1, 2, 4, 8]  # the first failure restarts at once, then the delay doubles
    assert any("(launch throttle)" in m for m in f.messages())
    assert all(t.exit_code == 1 for t in f.orch.tasks.values())


async def test_killed_healthy_tasks_are_replaced_at_once_never_throttled(fleet: FleetFactory) -> None:
    f = await fleet(desired=2)
    await f.steady()

    async def kill(victim: Task) -> None:
        f.orch.kill_task(victim.task_id)
        await until(lambda: victim.state == TaskState.STOPPED, "the killed task to be STOPPED")
        assert victim.exit_code == -9

    for _ in range(8):
        await kill(f.healthy()[0])
        before = len(f.orch.tasks)
        await f.orch.tick()  # the very next tick replaces it
        assert len(f.orch.tasks) == before + 1 and len(f.alive()) == 2
        await f.step()  # the replacement passes its first check
    assert not [m for m in f.messages() if "launch throttle" in m]
    assert all(state.failures == 0 for state in f.worker.throttle.values())


async def test_a_health_check_that_cannot_run_is_a_failed_check_not_the_end_of_checking(fleet: FleetFactory) -> None:
    runtime = FakeRuntime(behaviours={"app:1": Behaviour(health_check_error=True)})
    f = await fleet(desired=1, runtime=runtime)
    await f.step()
    (task,) = f.alive()
    for _ in range(3):
        await f.step()
    assert task.state == TaskState.STOPPED and task.health == "UNHEALTHY"
    assert task.stop_reason == "Task failed container health checks: health check could not run: ProcessLookupError()"
    assert runtime.processes[task.task_id].health_checks == 2  # retries, then it was stopped and replaced
    assert len(f.alive()) == 1


# --- the circuit breaker ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "broken",
    [Behaviour(exit_code_at_start=2), Behaviour(healthy=False), Behaviour(start_error="image not found")],
    ids=["exits at start", "fails its health checks", "cannot start"],
)
async def test_the_circuit_breaker_rolls_back_after_failure_threshold_failures(
    fleet: FleetFactory, broken: Behaviour
) -> None:
    f = await fleet(desired=2, deployment=DeploymentConfig(100, 200, rollback=True, failure_threshold=3))
    await f.steady()
    serving = {p.spec.task_id for p in f.runtime.running("app:1")}
    v2 = app_revision(f.registry, "2")
    f.runtime.behaviours[v2] = broken
    f.orch.update_service("worker", task_definition=v2)
    failed = next(d for d in f.worker.deployments if d.taskdef == v2)
    for _ in range(30):
        await f.step()
        if failed.rollout_state == RolloutState.FAILED:
            break
    assert failed.rollout_state == RolloutState.FAILED and failed.failed_tasks >= 3
    assert f.worker.primary.taskdef == "app:1" and f.worker.primary.reason == f"rollback of {v2}"
    assert any(f"({v2}) failed:" in m and m.endswith("Rolling back to app:1.") for m in f.messages())
    await f.steady()
    # The old revision kept serving throughout: its tasks were never stopped.
    assert {t.task_id for t in f.alive()} == serving
    assert [d.taskdef for d in f.worker.deployments] == ["app:1"]


async def test_without_a_revision_to_roll_back_to_the_breaker_keeps_retrying(fleet: FleetFactory) -> None:
    runtime = FakeRuntime(behaviours={"app:1": Behaviour(exit_code_at_start=3)})
    f = await fleet(desired=1, runtime=runtime, deployment=DeploymentConfig(failure_threshold=2))
    for _ in range(10):
        await f.step()
    assert any(m.endswith("no revision to roll back to, still retrying.") for m in f.messages())
    assert f.worker.primary.rollout_state == RolloutState.IN_PROGRESS
    assert [d.taskdef for d in f.worker.deployments] == ["app:1"]


# --- adoption after a restart -------------------------------------------------------------------


async def test_a_restarted_orchestrator_adopts_the_tasks_still_running(fleet: FleetFactory) -> None:
    first = await fleet(desired=3)
    await first.steady()
    tasks = {t.task_id: t.token for t in first.alive()}
    await first.close(stop_tasks=False)  # exits, leaving its tasks running
    state = first.state_dir / "state.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600  # it holds the tasks' tokens
    assert len(first.runtime.running()) == 3
    died, *kept = tasks
    first.runtime.exit(died, 137)  # one task dies while no orchestrator watches
    stray = "f" * 32  # a task the runtime runs but no state lists (started just before a crash)
    await first.runtime.start(replace(first.runtime.processes[kept[0]].spec, task_id=stray), lambda ports: {})

    second = await fleet(desired=3, runtime=first.runtime, clock=first.clock, registry=first.registry)
    assert {t.task_id for t in second.alive()} == set(kept)
    assert all(second.orch.tasks[i].token == tasks[i] and i in second.orch.vault for i in kept)
    assert second.orch.tasks[died].stop_reason == "Task stopped while the orchestrator was down"
    assert not first.runtime.processes[stray].alive
    events = [e.message for e in second.orch.events.newest_first(5)]
    assert "orchestrator started: adopted 2 running task(s), 1 had stopped meanwhile, removed 1 unknown task(s)." in (
        events
    )
    checks = {i: first.runtime.processes[i].health_checks for i in kept}
    await second.step(5)  # the adopted tasks are watched and health-checked again; one replacement starts
    assert all(first.runtime.processes[i].health_checks > checks[i] for i in kept)
    assert len(second.alive()) == 3 and set(kept) < {t.task_id for t in second.alive()}
    first.runtime.exit(kept[0], 1)  # and their exits are seen
    await until(lambda: second.orch.tasks[kept[0]].state == TaskState.STOPPED, "the adopted task's exit")
