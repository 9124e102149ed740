"""Pure parts of the ECS API, table-driven: ARN parsing, capacity fitting, deployment and task views."""

from __future__ import annotations

from typing import Any

import pytest

from services.orchestrator.awsapi.arns import Arns, Reference, parse_arn, short_name
from services.orchestrator.awsapi.ecs import _snake
from services.orchestrator.awsapi.ecs_views import (
    NO_BREAKER,
    deployment_config,
    deployment_config_view,
    deployment_problems,
    deployment_views,
    stop_code,
)
from services.orchestrator.awsapi.errors import AwsApiError
from services.orchestrator.capacity import Resources, default_cpu, placeable, shortfall
from services.orchestrator.model import Deployment, DeploymentConfig, DeploymentStatus, RolloutState, Task, TaskState

A = "arn:aws:ecs:us-east-1:123456789012"


@pytest.mark.parametrize(
    ("arn", "expected"),
    [
        (f"{A}:cluster/pixfleet", Reference("cluster", "pixfleet")),
        (f"{A}:service/pixfleet/worker", Reference("service", "worker", "pixfleet")),
        (f"{A}:service/worker", Reference("service", "worker")),  # the old, unqualified format
        (f"{A}:task/pixfleet/abc", Reference("task", "abc", "pixfleet")),
        (f"{A}:task-definition/fam:3", Reference("task-definition", "fam:3")),
        (f"{A}:container-instance/pixfleet/i1", Reference("container-instance", "i1", "pixfleet")),
        ("arn:aws:s3:::bucket/key", None),
        (f"{A}:volume/x", None),
        (f"{A}:cluster/", None),
        ("not-an-arn", None),
    ],
)
def test_parse_arn(arn: str, expected: Reference | None) -> None:
    if expected is None:
        with pytest.raises(AwsApiError) as error:
            parse_arn(arn)
        assert error.value.type == "InvalidParameterException"
    else:
        assert parse_arn(arn) == expected


@pytest.mark.parametrize(
    ("ref", "kind", "expected"),
    [
        ("worker", "service", "worker"),
        (f"{A}:service/pixfleet/worker", "service", "worker"),
        (f"{A}:task-definition/fam:3", "task-definition", "fam:3"),
        (f"{A}:task/pixfleet/abc", "cluster", None),  # an ARN of the wrong kind
    ],
)
def test_short_name(ref: str, kind: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(AwsApiError):
            short_name(ref, kind)
    else:
        assert short_name(ref, kind) == expected


def test_arns_round_trip() -> None:
    arns = Arns("us-east-1", "123456789012")
    assert parse_arn(arns.service("c", "s")) == Reference("service", "s", "c")
    assert parse_arn(arns.task("c", "t")) == Reference("task", "t", "c")
    assert arns.task_definition("f:1") == f"{A}:task-definition/f:1"


@pytest.mark.parametrize(
    ("remaining", "wanted", "count", "expected"),
    [
        (Resources(2048, 4096), Resources(1024, 1024), 2, (2, None)),
        (Resources(2048, 4096), Resources(1024, 1024), 3, (2, "RESOURCE:CPU")),
        (Resources(8192, 1000), Resources(256, 512), 3, (1, "RESOURCE:MEMORY")),
        (Resources(0, 0), Resources(256, 512), 1, (0, "RESOURCE:MEMORY")),  # memory is checked first
        (Resources(0, 0), Resources(256, 512), 0, (0, None)),
    ],
)
def test_placeable(remaining: Resources, wanted: Resources, count: int, expected: tuple[int, str | None]) -> None:
    assert placeable(remaining, wanted, count) == expected


def test_the_default_stack_fits_a_two_core_machine_at_its_scaling_maximum() -> None:
    api, deadletter, worker = Resources(256, 512), Resources(256, 512), Resources(1024, 1024)
    capacity = Resources(default_cpu(2), 8192)
    used = api + deadletter + Resources(4 * worker.cpu, 4 * worker.memory)
    assert shortfall(capacity - used, Resources(0, 0)) is None
    assert placeable(capacity - api - deadletter, worker, 4) == (4, None)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, DeploymentConfig()),
        ({"maximumPercent": 150}, DeploymentConfig(maximum_percent=150)),
        ({"deploymentCircuitBreaker": {"enable": True, "rollback": False}}, DeploymentConfig(rollback=False)),
        (
            {"deploymentCircuitBreaker": {"enable": False, "rollback": True}},
            DeploymentConfig(rollback=False, failure_threshold=NO_BREAKER),
        ),
        ({"minimumHealthyPercent": 50}, DeploymentConfig(minimum_healthy_percent=50)),
    ],
)
def test_deployment_config(body: dict[str, Any] | None, expected: DeploymentConfig) -> None:
    assert deployment_config(body, DeploymentConfig()) == expected
    view = deployment_config_view(expected)
    assert view["deploymentCircuitBreaker"]["enable"] == (expected.failure_threshold < NO_BREAKER)


def test_a_re_enabled_breaker_gets_the_default_threshold_back() -> None:
    off = deployment_config({"deploymentCircuitBreaker": {"enable": False, "rollback": False}}, DeploymentConfig())
    on = deployment_config({"deploymentCircuitBreaker": {"enable": True, "rollback": True}}, off)
    assert on == DeploymentConfig()


@pytest.mark.parametrize(
    ("config", "bad"),
    [
        (DeploymentConfig(), False),
        (DeploymentConfig(minimum_healthy_percent=0, maximum_percent=100), False),
        (DeploymentConfig(minimum_healthy_percent=120), True),
        (DeploymentConfig(minimum_healthy_percent=50, maximum_percent=90), True),
    ],
)
def test_deployment_problems(config: DeploymentConfig, bad: bool) -> None:
    assert bool(deployment_problems(config)) == bad


def _task(taskdef: str, state: TaskState = TaskState.RUNNING, desired: TaskState = TaskState.RUNNING) -> Task:
    return Task(task_id=f"{taskdef}-{state}", taskdef=taskdef, service="s", group="service:s", state=state,
                desired_status=desired)  # fmt: skip


def test_deployment_views_count_tasks_per_revision_and_show_failed_ones() -> None:
    old = Deployment("d-old", "f:1", DeploymentStatus.ACTIVE, RolloutState.COMPLETED, created_at=1)
    new = Deployment("d-new", "f:2", DeploymentStatus.PRIMARY, RolloutState.IN_PROGRESS, created_at=2)
    failed = Deployment("d-bad", "f:3", DeploymentStatus.INACTIVE, RolloutState.FAILED, failed_tasks=3, created_at=1.5)
    gone = Deployment("d-gone", "f:0", DeploymentStatus.INACTIVE, RolloutState.COMPLETED, created_at=0)
    tasks = [
        _task("f:1"),
        _task("f:1"),
        _task("f:2", TaskState.PROVISIONING),
        _task("f:2", TaskState.STOPPING, TaskState.STOPPED),  # stopping: counted nowhere
    ]
    views = deployment_views([gone, old, new], [failed], 3, tasks, lambda key: f"arn/{key}")
    assert [(v["id"], v["status"], v["rolloutState"]) for v in views] == [
        ("d-new", "PRIMARY", "IN_PROGRESS"),
        ("d-bad", "ACTIVE", "FAILED"),
        ("d-old", "ACTIVE", "COMPLETED"),
    ]
    counts = {v["id"]: (v["desiredCount"], v["runningCount"], v["pendingCount"]) for v in views}
    assert counts == {"d-new": (3, 0, 1), "d-bad": (0, 0, 0), "d-old": (2, 2, 0)}
    assert "circuit breaker" in views[1]["rolloutStateReason"]


def test_a_rollback_deployment_shares_its_revision_with_the_failed_ones_predecessor() -> None:
    first = Deployment("d1", "f:1", DeploymentStatus.INACTIVE, RolloutState.COMPLETED, created_at=1)
    rollback = Deployment(
        "d3", "f:1", DeploymentStatus.PRIMARY, RolloutState.COMPLETED, "rollback of f:2", created_at=3
    )
    (view,) = deployment_views([first, rollback], [], 1, [_task("f:1")], str)
    assert view["runningCount"] == 1 and "rolling back from f:2" in view["rolloutStateReason"]


@pytest.mark.parametrize(
    ("state", "desired", "reason", "code", "service", "expected"),
    [
        (TaskState.RUNNING, TaskState.RUNNING, None, None, "s", None),
        (TaskState.STOPPING, TaskState.STOPPED, "by hand", "UserInitiated", "s", "UserInitiated"),
        (TaskState.STOPPED, TaskState.STOPPED, "Essential container in task exited (exit code 0)", None, None,
         "EssentialContainerExited"),
        (TaskState.STOPPED, TaskState.STOPPED, "CannotStartContainerError: boom", None, "s", "TaskFailedToStart"),
        (TaskState.STOPPED, TaskState.STOPPED, "Scaling activity initiated by deployment", None, "s",
         "ServiceSchedulerInitiated"),
    ],
)  # fmt: skip
def test_stop_code(
    state: TaskState, desired: TaskState, reason: str | None, code: str | None, service: str | None, expected: str
) -> None:
    task = Task("t", "f:1", service, "g", state=state, desired_status=desired, stop_reason=reason, stop_code=code)
    assert stop_code(task) == expected


@pytest.mark.parametrize(
    ("action", "method"),
    [("ListServices", "list_services"), ("RunTask", "run_task"), ("ListTaskDefinitionFamilies",
     "list_task_definition_families")],
)  # fmt: skip
def test_action_names(action: str, method: str) -> None:
    assert _snake(action) == method
