"""Tasks as load balancer targets: the pure decision (table), then the control loop with fakes.

The fakes are pixfleet's own seams (a task runtime, a clock, a load balancer driver); the
same rules run against a real HAProxy and real API processes in test_lb_stack.py.
"""

from __future__ import annotations

import copy
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fakes import FakeClock, FakeLoadBalancer, FakeRuntime, settle, until
from infra.credentials import TemporaryCredentials
from services.orchestrator.credentials import CredentialVault
from services.orchestrator.model import DeploymentConfig, LoadBalancerRef, ServiceConfig, TaskState
from services.orchestrator.orchestrator import Orchestrator
from services.orchestrator.awsapi.ecs import load_balancer_refs
from services.orchestrator.awsapi.errors import AwsApiError
from services.orchestrator.targets import Candidate, TargetChanges, target_changes
from services.orchestrator.taskdefs import TaskDefinitionRegistry

A, B = ("127.0.0.1", 40001), ("127.0.0.1", 40002)


def c(task_id: str, running: bool = True, healthy: bool = True, address: tuple[str, int] | None = A) -> Candidate:
    return Candidate(task_id, running, healthy, address)


@pytest.mark.parametrize(
    ("candidates", "registered", "draining", "expected"),
    [
        ([c("t1")], {}, set(), TargetChanges(register=(("t1", *A),))),  # healthy and running: register
        ([c("t1", healthy=False)], {}, set(), TargetChanges()),  # not healthy yet: wait
        ([c("t1", address=None)], {}, set(), TargetChanges()),  # the port is not mapped: nothing to register
        ([c("t1")], {"t1": A}, set(), TargetChanges()),  # registered already
        ([c("t1", address=B)], {"t1": A}, set(), TargetChanges(register=(("t1", *B),))),  # moved: register anew
        ([c("t1", running=False)], {"t1": A}, set(), TargetChanges(deregister=("t1",))),  # stopping: deregister
        ([c("t1", healthy=False)], {"t1": A}, set(), TargetChanges(deregister=("t1",))),  # unhealthy: out
        ([], {"gone": A}, set(), TargetChanges(deregister=("gone",))),  # no such task (after a restart)
        ([c("t1", running=False)], {"t1": A}, {"t1"}, TargetChanges()),  # being drained: left to that drain
        ([c("t1")], {}, {"t1"}, TargetChanges()),  # draining: not registered again meanwhile
        (
            [c("t1"), c("t2", address=B), c("t3", healthy=False)],
            {"t0": A},
            set(),
            TargetChanges(register=(("t1", *A), ("t2", *B)), deregister=("t0",)),
        ),
    ],
)
def test_target_changes(
    candidates: list[Candidate], registered: dict[str, tuple[str, int]], draining: set[str], expected: TargetChanges
) -> None:
    assert target_changes(candidates, registered, draining) == expected


TG = "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/pixfleet-api/0123456789abcdef"


@pytest.mark.parametrize(
    ("entries", "error"),
    [
        ([{"targetGroupArn": TG, "containerName": "api", "containerPort": 8080}], None),
        ([{"targetGroupArn": TG, "containerName": "api"}], "loadBalancers[0] needs containerPort"),
        ([{"targetGroupArn": "", "containerName": "api", "containerPort": 1}], "needs targetGroupArn"),
        ([{"loadBalancerName": "classic", "containerName": "api", "containerPort": 1}], "not loadBalancerName"),
        ([{"targetGroupArn": TG, "containerName": "api", "containerPort": 8080}] * 6, "at most 5"),
    ],
)
def test_create_service_load_balancers(entries: list[dict[str, Any]], error: str | None) -> None:
    """CreateService's ``loadBalancers`` → the orchestrator's bindings (refusals as InvalidParameterException)."""
    if error is None:
        assert load_balancer_refs(entries) == (LoadBalancerRef(TG, "api", 8080),)
    else:
        with pytest.raises(AwsApiError, match=re.escape(error)) as refused:
            load_balancer_refs(entries)
        assert refused.value.type == "InvalidParameterException"


# --- the control loop with a fake runtime and a fake load balancer ---------------------------------

pytestmark_async = pytest.mark.asyncio(loop_scope="session")

WEB: dict[str, Any] = {
    "family": "web",
    "taskRoleArn": "pixfleet-api",
    "cpu": "256",
    "memory": "512",
    "containerDefinitions": [
        {
            "name": "web",
            "image": "web",
            "command": ["web"],
            "environment": [{"name": "VERSION", "value": "1"}],
            "portMappings": [{"containerPort": 8080, "hostPort": 0}],
            "stopTimeout": 5,
            "healthCheck": {"command": ["CMD", "check"], "interval": 5, "timeout": 2, "retries": 2},
        }
    ],
}
GROUP = "pixfleet-api"


def web_revision(registry: TaskDefinitionRegistry, version: str) -> str:
    doc = copy.deepcopy(WEB)
    doc["containerDefinitions"][0]["environment"] = [{"name": "VERSION", "value": version}]
    return registry.register(doc).key


async def no_assume(role_arn: str, session_name: str) -> TemporaryCredentials:
    raise AssertionError("no task asks for credentials in these tests")


@dataclass
class Balanced:
    orch: Orchestrator
    runtime: FakeRuntime
    clock: FakeClock
    lb: FakeLoadBalancer
    registry: TaskDefinitionRegistry

    @property
    def web(self) -> Any:
        return self.orch.services["web"]

    async def step(self, seconds: float = 1.0) -> None:
        await self.clock.advance(seconds)
        await self.orch.tick()
        await settle()

    async def until_steady(self, steps: int = 30) -> None:
        for _ in range(steps):
            if self.web.steady:
                return
            self.lb.pass_checks()
            await self.step()
        raise AssertionError("not steady")

    def alive(self) -> list[Any]:
        return self.orch.alive_tasks(self.web)


@pytest.fixture
async def balanced(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Balanced]]]:
    made: list[Balanced] = []

    async def make(desired: int = 2, lb: FakeLoadBalancer | None = None) -> Balanced:
        registry = TaskDefinitionRegistry()
        first = web_revision(registry, "1")
        clock, runtime, lb = FakeClock(), FakeRuntime(), lb or FakeLoadBalancer()
        config = ServiceConfig(
            "web",
            first,
            desired,
            deployment=DeploymentConfig(minimum_healthy_percent=100, maximum_percent=200),
            load_balancers=(LoadBalancerRef(TG, "web", 8080),),
        )
        orch = Orchestrator(
            cluster="test",
            registry=registry,
            services=[config],
            runtime=runtime,
            vault=CredentialVault(no_assume),
            metric_source=None,
            state_dir=tmp_path / f"orchestrator-{len(made)}",
            task_env={},
            endpoint_url="http://127.0.0.1:9",
            role_arn=lambda name: f"arn:aws:iam::123456789012:role/{name}",
            tick_interval=3600,
            clock=clock,
            sleep=clock.sleep,
            load_balancer=lb,
        )
        await orch.restore()
        made.append(Balanced(orch, runtime, clock, lb, registry))
        return made[-1]

    yield make
    for b in made:
        b.lb.finish_drains()
        await b.orch.close()


@pytestmark_async
async def test_healthy_tasks_are_registered_on_their_own_dynamic_ports(balanced: Any) -> None:
    b = await balanced(desired=2)
    await b.step()  # both start; not healthy yet
    assert b.lb.registered(GROUP) == {}
    await b.until_steady()
    registered = b.lb.registered(GROUP)
    assert set(registered) == {t.task_id for t in b.alive()}
    ports = {port for _, port in registered.values()}
    assert len(ports) == 2  # two tasks on one machine, each on the host port it was given
    for task in b.alive():
        assert registered[task.task_id] == ("127.0.0.1", task.handle.ports[8080])
    (lb,) = b.orch.load_balancers("web")
    assert lb["targetGroupArn"] == TG and (lb["containerName"], lb["containerPort"]) == ("web", 8080)
    assert sorted(d["TargetHealth"]["State"] for d in lb["targetHealthDescriptions"]) == ["healthy", "healthy"]


@pytestmark_async
async def test_a_task_counts_healthy_only_once_its_target_is(balanced: Any) -> None:
    b = await balanced(desired=1)
    for _ in range(5):
        await b.step()
    (task,) = b.alive()
    assert b.lb.registered(GROUP) and b.lb.states[(GROUP, task.task_id)] == "initial"
    assert not b.orch.is_healthy(task) and not b.web.steady
    b.lb.pass_checks()
    await b.step()
    await b.step()
    assert b.orch.is_healthy(task) and b.web.steady


@pytestmark_async
async def test_scale_in_drains_the_target_before_the_task_is_stopped(balanced: Any) -> None:
    b = await balanced(desired=2, lb=FakeLoadBalancer(hold_drains=True))
    await b.until_steady()
    b.orch.update_service("web", desired_count=1)
    await b.step()
    stopping = [t for t in b.orch.tasks.values() if t.state == TaskState.STOPPING]
    assert len(stopping) == 1
    victim = stopping[0]
    assert ("drain", GROUP, victim.task_id) in b.lb.log
    assert b.runtime.processes[victim.task_id].stops == 0  # still draining: not signalled yet
    b.lb.finish_drains()
    await until(lambda: victim.state == TaskState.STOPPED, "the drained task stopped")
    assert b.runtime.processes[victim.task_id].stops == 1
    assert victim.task_id not in b.lb.registered(GROUP)
    assert b.lb.log.index(("drain", GROUP, victim.task_id)) < b.lb.log.index(("deregistered", GROUP, victim.task_id))


@pytestmark_async
async def test_a_rolling_deploy_stops_old_tasks_only_once_new_targets_are_healthy(balanced: Any) -> None:
    b = await balanced(desired=2, lb=FakeLoadBalancer(hold_drains=False))
    await b.until_steady()
    old = {t.task_id for t in b.alive()}
    v2 = web_revision(b.registry, "2")
    b.orch.update_service("web", task_definition=v2)
    for _ in range(6):  # new tasks start, pass their container checks, are registered: initial
        await b.step()
        in_service = [i for (_, i), s in b.lb.states.items() if s == "healthy"]
        assert old <= set(in_service)  # no old target leaves before a new one is in service
        assert all(t.state == TaskState.RUNNING for t in b.orch.tasks.values() if t.task_id in old)
    new = {t.task_id for t in b.alive()} - old
    assert new and all(b.lb.states[(GROUP, i)] == "initial" for i in new)
    await b.until_steady()
    assert {t.taskdef for t in b.alive()} == {v2}
    assert set(b.lb.registered(GROUP)) == {t.task_id for t in b.alive()}
    for task_id in old:
        assert b.lb.log.index(("drain", GROUP, task_id)) < b.lb.log.index(("deregistered", GROUP, task_id))


@pytestmark_async
async def test_a_killed_task_is_deregistered_and_replaced(balanced: Any) -> None:
    b = await balanced(desired=2, lb=FakeLoadBalancer(healthy_at_once=True))
    await b.until_steady()
    victim = b.alive()[0]
    b.orch.kill_task(victim.task_id)
    await until(lambda: victim.state == TaskState.STOPPED, "the killed task stopped")
    await b.step()
    await settle()
    assert victim.task_id not in b.lb.registered(GROUP)
    await b.until_steady()
    assert len(b.lb.registered(GROUP)) == 2


def test_pixfleet_status_shows_target_health_at_80_columns() -> None:
    """Target health travels in DescribeTasks' attributes; the client turns it into targetHealthDescriptions."""
    from rich.cells import cell_len
    from rich.console import Console

    from pixfleet.fleet_view import FleetStatus, render_status
    from pixfleet.orchestrator_client import service_summary, task_summary

    arn = "arn:aws:ecs:us-east-1:000000000000:"

    def task(task_id: str, port: int, state: str, reason: str | None = None) -> dict[str, Any]:
        return task_summary(
            {
                "taskArn": f"{arn}task/pixfleet/{task_id}",
                "taskDefinitionArn": f"{arn}task-definition/pixfleet-api:3",
                "group": "service:api",
                "lastStatus": "RUNNING",
                "desiredStatus": "STOPPED" if state == "draining" else "RUNNING",
                "healthStatus": "HEALTHY",
                "containers": [{"name": "api"}],
                "attributes": [
                    {
                        "name": "pixfleet.target.pixfleet-api",
                        "value": " ".join(filter(None, [str(port), state, reason])),
                    }
                ],
            }
        )

    tasks = [
        task("a" * 32, 41001, "healthy"),
        task("b" * 32, 41002, "initial", "Elb.InitialHealthChecking"),
        task("c" * 32, 41003, "draining", "Target.DeregistrationInProgress"),
    ]
    service = service_summary(
        {
            "serviceName": "api",
            "taskDefinition": f"{arn}task-definition/pixfleet-api:3",
            "desiredCount": 2,
            "runningCount": 3,
            "pendingCount": 0,
            "deployments": [],
            "loadBalancers": [{"targetGroupArn": TG, "containerName": "api", "containerPort": 8080}],
        },
        tasks,
    )
    assert (service["healthyCount"], service["stoppingCount"]) == (1, 1)  # b is not in service yet
    status = FleetStatus.from_snapshot({"services": [service], "tasks": []})
    assert [(t.target_group, t.port, t.state) for t in status.targets] == [
        ("pixfleet-api", 41001, "healthy"),
        ("pixfleet-api", 41002, "initial"),
        ("pixfleet-api", 41003, "draining"),
    ]
    console = Console(width=80, record=True, color_system=None)
    for part in render_status(status, now=0.0):
        console.print(part)
    text = console.export_text()
    assert all(cell_len(line) <= 80 for line in text.splitlines()), text
    assert "…" not in text and "aaaaaaaa" in text and "Target.DeregistrationInProgress" in text, text
