"""The deployment planner (services/orchestrator/planner.py), table-driven: a pure function, no clock, no runtime."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.orchestrator.model import DeploymentConfig, DeploymentStatus, HealthStatus, RolloutState, TaskState
from services.orchestrator.planner import DeploymentView, ServiceSnapshot, TaskView, Verdict, plan
from services.orchestrator.throttle import ThrottleState

RUNNING, PROVISIONING, STOPPING = TaskState.RUNNING, TaskState.PROVISIONING, TaskState.STOPPING
HEALTHY, UNHEALTHY, UNKNOWN = HealthStatus.HEALTHY, HealthStatus.UNHEALTHY, HealthStatus.UNKNOWN

V1_DONE = DeploymentView("d1", "app:1", DeploymentStatus.ACTIVE, RolloutState.COMPLETED)
V2 = DeploymentView("d2", "app:2")
ROLLING = (V1_DONE, V2)  # app:1 (completed) is being replaced by app:2
STEADY_V1 = (DeploymentView("d1", "app:1", DeploymentStatus.PRIMARY, RolloutState.COMPLETED),)
ONLY_V2 = (V2,)


def old(task_id: str, **kw: Any) -> TaskView:
    return TaskView(task_id, "app:1", **kw)


def new(task_id: str, **kw: Any) -> TaskView:
    return TaskView(task_id, "app:2", **kw)


def snap(
    tasks: tuple[TaskView, ...],
    *,
    desired: int = 2,
    deployments: tuple[DeploymentView, ...] = ROLLING,
    min_healthy: int = 100,
    max_percent: int = 200,
    rollback: bool = True,
    throttle: dict[str, ThrottleState] | None = None,
    now: float = 100.0,
    steady: bool = False,
) -> ServiceSnapshot:
    return ServiceSnapshot(
        name="worker",
        desired=desired,
        config=DeploymentConfig(min_healthy, max_percent, rollback, failure_threshold=3),
        deployments=deployments,
        tasks=tasks,
        throttle=throttle or {},
        now=now,
        steady=steady,
    )


# (case, snapshot, is_error, tasks to start, task ids to stop in order, verdict)
CASES: list[tuple[str, ServiceSnapshot, bool, int, list[str], Verdict | None]] = [
    # --- rolling within maximumPercent / minimumHealthyPercent
    ("max 200: the whole new revision at once", snap((old("o1"), old("o2"))), False, 2, [], Verdict.UNCHANGED),
    ("max 150: one extra task at a time", snap((old("o1"), old("o2")), max_percent=150), False, 1, [], None),
    (
        "max 100, min 50: one old task goes first, nothing starts",
        snap((old("o1", in_flight=3), old("o2")), min_healthy=50, max_percent=100),
        False,
        0,
        ["o2"],
        None,
    ),
    (
        "min 100: old tasks stay while the new ones are not healthy",
        snap((old("o1"), old("o2"), new("n1", health=UNKNOWN), new("n2", health=UNKNOWN))),
        False,
        0,
        [],
        None,
    ),
    (
        "min 100: each healthy new task lets one old (idle) task go",
        snap((old("o1", in_flight=2), old("o2"), new("n1"), new("n2", health=UNKNOWN))),
        False,
        0,
        ["o2"],
        None,
    ),
    (
        "unhealthy old tasks go at once, even below the minimum",
        snap((old("o1", health=UNHEALTHY), old("o2"))),
        False,
        2,
        ["o1"],
        None,
    ),
    (
        "a still-provisioning old task is not healthy: it goes at once",
        snap((old("o1", state=PROVISIONING, health=UNKNOWN), old("o2"), new("n1"), new("n2"))),
        False,
        0,
        ["o1", "o2"],
        None,
    ),
    (
        "without a health check, RUNNING counts as healthy",
        snap((old("o1"), old("o2"), new("n1", health=UNKNOWN, health_check=False), new("n2", health=UNKNOWN))),
        False,
        0,
        ["o1"],
        None,
    ),
    (
        "stopping tasks are neither alive nor counted",
        snap((old("o1", state=STOPPING, desired_status=TaskState.STOPPED), old("o2"))),
        False,
        2,
        [],
        None,
    ),
    # --- completion and steadiness
    ("all new and healthy: completed", snap((new("n1"), new("n2"))), False, 0, [], Verdict.COMPLETED),
    (
        "the last old task stopping: completed, not yet retired",
        snap((new("n1"), new("n2"), old("o1", state=STOPPING, desired_status=TaskState.STOPPED))),
        False,
        0,
        [],
        Verdict.COMPLETED,
    ),
    ("new tasks not healthy yet: in progress", snap((new("n1"), new("n2", health=UNKNOWN))), False, 0, [], None),
    # --- scale in
    (
        "scale in: an idle task before a younger busy one",
        snap(
            (TaskView("a", "app:1", in_flight=4, started_at=30), TaskView("b", "app:1", started_at=20)),
            desired=1,
            deployments=STEADY_V1,
        ),
        False,
        0,
        ["b"],
        None,
    ),
    (
        "scale in: among idle tasks the youngest",
        snap(
            (
                TaskView("a", "app:1", started_at=10),
                TaskView("b", "app:1", started_at=30),
                TaskView("c", "app:1", started_at=20),
            ),
            desired=1,
            deployments=STEADY_V1,
        ),
        False,
        0,
        ["b", "c"],
        None,
    ),
    (
        "scale in: a provisioning task before a running one",
        snap(
            (TaskView("a", "app:1", started_at=10), TaskView("b", "app:1", state=PROVISIONING, health=UNKNOWN)),
            desired=1,
            deployments=STEADY_V1,
        ),
        False,
        0,
        ["b"],
        None,
    ),
    (
        "scale in: busy tasks last, whatever their age",
        snap(
            (TaskView("a", "app:1", in_flight=1, started_at=50), TaskView("b", "app:1", in_flight=2, started_at=60)),
            desired=1,
            deployments=STEADY_V1,
        ),
        False,
        0,
        ["b"],
        None,
    ),
    ("desired 0 stops every task", snap((new("n1"), new("n2")), desired=0), False, 0, ["n1", "n2"], None),
    # --- the launch throttle of the primary revision
    (
        "throttled revision: no start before next_launch_at",
        snap((), throttle={"app:2": ThrottleState(failures=3, next_launch_at=150.0)}),
        False,
        0,
        [],
        None,
    ),
    (
        "throttle elapsed: starts again",
        snap((), throttle={"app:2": ThrottleState(failures=3, next_launch_at=150.0)}, now=150.0),
        False,
        2,
        [],
        None,
    ),
    (
        "another revision's throttle does not hold this one",
        snap((), throttle={"app:1": ThrottleState(failures=9, next_launch_at=1e9)}),
        False,
        2,
        [],
        None,
    ),
    # --- the circuit breaker
    (
        "failureThreshold failures: roll back to the completed deployment",
        snap((old("o1"), old("o2")), deployments=(V1_DONE, replace(V2, failed_tasks=3))),
        False,
        0,
        [],
        Verdict.ROLL_BACK,
    ),
    (
        "below the threshold: keep rolling",
        snap((old("o1"), old("o2")), deployments=(V1_DONE, replace(V2, failed_tasks=2))),
        False,
        2,
        [],
        Verdict.UNCHANGED,
    ),
    (
        "nothing completed to roll back to: failed, keep trying",
        snap((), deployments=(replace(V2, failed_tasks=3),)),
        False,
        0,
        [],
        Verdict.FAILED,
    ),
    (
        "rollback off: failed, keep trying",
        snap((old("o1"),), deployments=(V1_DONE, replace(V2, failed_tasks=5)), rollback=False),
        False,
        0,
        [],
        Verdict.FAILED,
    ),
    (
        "a completed deployment never trips",
        snap(
            (new("n1"), new("n2")),
            deployments=(replace(V2, rollout_state=RolloutState.COMPLETED, failed_tasks=7),),
        ),
        False,
        0,
        [],
        Verdict.UNCHANGED,
    ),
    # --- snapshots the planner refuses
    ("no PRIMARY deployment", snap((), deployments=(V1_DONE,)), True, 0, [], None),
    ("two PRIMARY deployments", snap((), deployments=(V2, replace(V2, deployment_id="d3"))), True, 0, [], None),
    ("negative desired count", snap((), desired=-1), True, 0, [], None),
]


@pytest.mark.parametrize(
    ("name", "snapshot", "is_error", "start", "stops", "verdict"), CASES, ids=[c[0] for c in CASES]
)
def test_plan(
    name: str, snapshot: ServiceSnapshot, is_error: bool, start: int, stops: list[str], verdict: Verdict | None
) -> None:
    if is_error:
        with pytest.raises(ValueError, match=r"PRIMARY|desired"):
            plan(snapshot)
        return
    result = plan(snapshot)
    assert result.start == start
    assert [s.task_id for s in result.stop] == stops
    if verdict is not None:
        assert result.verdict == verdict


def test_reasons_and_events_are_the_ones_the_service_shows() -> None:
    result = plan(snap((old("o1", health=UNHEALTHY), old("o2"))))
    assert [s.reason for s in result.stop] == ["Deployment d2 replaced this task"]
    scale_in = plan(snap((TaskView("abcdefgh12", "app:1"), TaskView("b", "app:1")), desired=1, deployments=STEADY_V1))
    assert scale_in.stop[0].reason == "Scaling activity initiated by (service worker)"
    assert scale_in.events[0] == "has begun draining 1 tasks: (task abcdefgh)."


def test_completion_events_retirement_and_steadiness() -> None:
    done = plan(snap((new("n1"), new("n2"))))
    assert done.events == ("deployment d2 (app:2) completed.", "has reached a steady state.")
    assert done.retire_active and done.steady
    assert plan(snap((new("n1"), new("n2")), steady=True)).events == ("deployment d2 (app:2) completed.",)
    draining = plan(snap((new("n1"), new("n2"), old("o1", state=STOPPING, desired_status=TaskState.STOPPED))))
    assert not draining.retire_active and draining.steady
    surplus = plan(
        snap((new("n1"), new("n2"), new("n3")), deployments=(replace(V2, rollout_state=RolloutState.COMPLETED),))
    )
    assert surplus.steady  # the surplus task is being stopped by this very plan


def test_the_breaker_names_the_failure_and_the_revision_it_returns_to() -> None:
    back = plan(snap((old("o1"),), deployments=(V1_DONE, replace(V2, failed_tasks=3))))
    assert back.rollback_to == V1_DONE
    assert back.events == (
        "deployment d2 (app:2) failed: 3 tasks failed to start or become healthy. Rolling back to app:1.",
    )
    assert not back.stop and not back.start  # apply, then plan again
    stuck = plan(snap((), deployments=(replace(V2, failed_tasks=3),)))
    assert stuck.rollback_to is None
    assert stuck.events == (
        "deployment d2 (app:2) failed: 3 tasks failed to start or become healthy; "
        "no revision to roll back to, still retrying.",
    )


# --- the two promises, over many snapshots ----------------------------------------------------

task_views = st.builds(
    TaskView,
    task_id=st.uuids().map(str),
    revision=st.sampled_from(["app:1", "app:2"]),
    state=st.sampled_from([PROVISIONING, RUNNING, RUNNING, STOPPING]),
    health=st.sampled_from([HEALTHY, HEALTHY, UNHEALTHY, UNKNOWN]),
    in_flight=st.none() | st.integers(0, 3),
    started_at=st.floats(0, 100),
)


@given(
    tasks=st.lists(task_views, max_size=10),
    desired=st.integers(0, 6),
    min_healthy=st.integers(0, 100),
    max_percent=st.integers(100, 400),
)
def test_never_beyond_maximum_percent_nor_below_minimum_healthy(
    tasks: list[TaskView], desired: int, min_healthy: int, max_percent: int
) -> None:
    snapshot = snap(
        tuple(replace(t, desired_status=TaskState.STOPPED) if t.state == STOPPING else t for t in tasks),
        desired=desired,
        min_healthy=min_healthy,
        max_percent=max_percent,
    )
    result = plan(snapshot)
    alive = [t for t in snapshot.tasks if t.alive]
    assert len(alive) + result.start <= max(desired * max_percent // 100, desired, len(alive))
    stopped = {s.task_id for s in result.stop}
    assert len(stopped) == len(result.stop)  # no task stopped twice
    healthy_before = sum(1 for t in alive if t.healthy)
    replaced_healthy = sum(1 for t in alive if t.task_id in stopped and t.revision == "app:1" and t.healthy)
    assert replaced_healthy == 0 or healthy_before - replaced_healthy >= math.ceil(desired * min_healthy / 100)
