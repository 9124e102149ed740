"""The deployment planner: a pure function from a service's tasks to what the control loop does next.

ECS's rolling update and deployment circuit breaker, one decision per tick, beside
:func:`scaling.decide` and the launch throttle. :func:`plan` looks at a frozen
:class:`ServiceSnapshot` and answers a :class:`Plan`:

1. **Circuit breaker.** While the primary deployment is ``IN_PROGRESS``, once
   ``failureThreshold`` of its tasks stopped before they became healthy (or failed
   their health checks), the deployment has FAILED: with ``rollback`` on and an
   earlier COMPLETED deployment, roll back to it; otherwise reset the count and keep
   trying the revision (the service has nothing better to run).
2. **Start** what the primary deployment lacks, never more than ``maximumPercent``
   of the desired count alive at once, and only when the primary revision's launch
   throttle allows it (see :mod:`throttle`).
3. **Replace** old-revision tasks: unhealthy ones at once; healthy ones only while the
   healthy count (all revisions) stays at or above ``ceil(desired ×
   minimumHealthyPercent / 100)``; unhealthy first, then idle ones (no job in flight).
4. **Scale in** surplus primary tasks: idle ones first, then those still
   provisioning, then the youngest.
5. **Rollout state.** The rollout is COMPLETED once no old-revision task is left and
   ``desired`` healthy primary tasks run; the service is *steady* when exactly
   ``desired`` tasks are alive, all of them healthy primary ones. Once no old-revision
   task is alive or stopping, the ACTIVE (replaced) deployments become INACTIVE.

What is guaranteed: the plan only ever stops old-revision tasks within the minimum
healthy percent, never starts beyond the maximum percent, and its reason strings are
the ones the service events and ``stoppedReason`` show.

What is not: the planner does not know what acting on its plan will do (a launch
can fail; a task it starts may count healthy at once when its revision has no health
check). It is level-triggered instead: the orchestrator applies a breaker trip and
plans again, and after starting tasks plans again before stopping any, so each step
sees the state the previous one left.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from services.orchestrator.model import DeploymentConfig, DeploymentStatus, HealthStatus, RolloutState, TaskState
from services.orchestrator.throttle import ThrottleState


@dataclass(frozen=True)
class TaskView:
    """What the planner needs to know about one task of the service."""

    task_id: str
    revision: str  # its task definition, ``family:revision``
    state: TaskState = TaskState.RUNNING
    health: HealthStatus = HealthStatus.HEALTHY
    health_check: bool = True  # False: its revision has none, so a RUNNING task counts healthy
    desired_status: TaskState = TaskState.RUNNING
    in_flight: int | None = None  # jobs it is working on, from its last health check
    started_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.state in (TaskState.PROVISIONING, TaskState.RUNNING) and self.desired_status == TaskState.RUNNING

    @property
    def healthy(self) -> bool:
        return self.state == TaskState.RUNNING and (self.health == HealthStatus.HEALTHY or not self.health_check)

    @property
    def busy(self) -> bool:
        return (self.in_flight or 0) > 0


@dataclass(frozen=True)
class DeploymentView:
    deployment_id: str
    revision: str
    status: DeploymentStatus = DeploymentStatus.PRIMARY
    rollout_state: RolloutState = RolloutState.IN_PROGRESS
    failed_tasks: int = 0  # tasks that stopped before becoming healthy, or failed their checks


@dataclass(frozen=True)
class ServiceSnapshot:
    """One service at one instant: the planner's whole input."""

    name: str
    desired: int
    config: DeploymentConfig
    deployments: tuple[DeploymentView, ...]  # oldest first, exactly one PRIMARY
    tasks: tuple[TaskView, ...]  # the service's tasks that have not STOPPED
    throttle: Mapping[str, ThrottleState] = field(default_factory=dict)  # revision → launch throttle
    now: float = 0.0
    steady: bool = False  # what the previous tick concluded

    @property
    def primary(self) -> DeploymentView:
        primaries = [d for d in self.deployments if d.status == DeploymentStatus.PRIMARY]
        if len(primaries) != 1:
            raise ValueError(f"service {self.name}: {len(primaries)} PRIMARY deployments, want exactly 1")
        return primaries[0]


class Verdict(StrEnum):
    """What became of the primary deployment's rollout on this tick."""

    UNCHANGED = "unchanged"  # still in progress, or completed on an earlier tick
    COMPLETED = "completed"
    FAILED = "failed"  # the breaker tripped with nothing to roll back to: keep trying the revision
    ROLL_BACK = "roll_back"  # the breaker tripped: go back to ``Plan.rollback_to``


@dataclass(frozen=True)
class Stop:
    task_id: str
    reason: str  # becomes the task's stoppedReason


@dataclass(frozen=True)
class Plan:
    verdict: Verdict
    revision: str  # the primary deployment's revision: what ``start`` starts
    start: int = 0
    stop: tuple[Stop, ...] = ()  # replaced old-revision tasks first, then scale-in victims
    rollback_to: DeploymentView | None = None  # with ROLL_BACK: the COMPLETED deployment to return to
    retire_active: bool = False  # no old-revision task left: ACTIVE deployments become INACTIVE
    steady: bool = False
    events: tuple[str, ...] = ()  # service event messages, in order

    @property
    def breaker_tripped(self) -> bool:
        return self.verdict in (Verdict.FAILED, Verdict.ROLL_BACK)


def plan(snapshot: ServiceSnapshot) -> Plan:
    """What to do about one service now. Raises ``ValueError`` for a snapshot without one PRIMARY deployment.

    When the breaker trips (``FAILED`` or ``ROLL_BACK``), the plan carries only that:
    apply it and plan again, since the primary deployment changes.
    """
    if snapshot.desired < 0:
        raise ValueError(f"service {snapshot.name}: desired count {snapshot.desired} < 0")
    primary = snapshot.primary
    tripped = _breaker(snapshot, primary)
    if tripped is not None:
        return tripped

    want, dc = snapshot.desired, snapshot.config
    alive = [t for t in snapshot.tasks if t.alive]
    new = [t for t in alive if t.revision == primary.revision]
    old = [t for t in alive if t.revision != primary.revision]
    max_alive = max(want, want * dc.maximum_percent // 100)
    min_healthy = math.ceil(want * dc.minimum_healthy_percent / 100)

    start = max(0, min(want - len(new), max_alive - len(alive)))
    if start and not snapshot.throttle.get(primary.revision, ThrottleState()).may_launch(snapshot.now):
        start = 0

    stops: list[Stop] = []
    replaced = f"Deployment {primary.deployment_id} replaced this task"
    healthy = sum(1 for t in alive if t.healthy)
    for task in sorted(old, key=lambda t: (t.healthy, t.busy)):
        if not task.healthy:
            stops.append(Stop(task.task_id, replaced))
        elif healthy - 1 >= min_healthy:
            stops.append(Stop(task.task_id, replaced))
            healthy -= 1

    events: list[str] = []
    surplus = len(new) - want
    if surplus > 0:
        victims = sorted(new, key=lambda t: (t.busy, t.state == TaskState.RUNNING, -(t.started_at or 0)))[:surplus]
        stops += [Stop(t.task_id, f"Scaling activity initiated by (service {snapshot.name})") for t in victims]
        events.append(f"has begun draining {len(victims)} tasks: (task {', '.join(t.task_id[:8] for t in victims)}).")

    # The rollout, on the state this plan leaves behind.
    stopped = {s.task_id for s in stops}
    alive = [t for t in alive if t.task_id not in stopped]
    old_left = [t for t in alive if t.revision != primary.revision]
    old_stopping = [
        t
        for t in snapshot.tasks
        if t.revision != primary.revision and (t.state == TaskState.STOPPING or t.task_id in stopped)
    ]
    healthy_new = sum(1 for t in alive if t.revision == primary.revision and t.healthy)
    completed = primary.rollout_state == RolloutState.IN_PROGRESS and not old_left and healthy_new >= want
    if completed:
        events.append(f"deployment {primary.deployment_id} ({primary.revision}) completed.")
    steady = (
        (completed or primary.rollout_state == RolloutState.COMPLETED)
        and not old_left
        and len(alive) == want
        and healthy_new == want
    )
    if steady and not snapshot.steady:
        events.append("has reached a steady state.")
    return Plan(
        verdict=Verdict.COMPLETED if completed else Verdict.UNCHANGED,
        revision=primary.revision,
        start=start,
        stop=tuple(stops),
        retire_active=not old_left and not old_stopping,
        steady=steady,
        events=tuple(events),
    )


def _breaker(snapshot: ServiceSnapshot, primary: DeploymentView) -> Plan | None:
    threshold = snapshot.config.failure_threshold
    if primary.rollout_state != RolloutState.IN_PROGRESS or primary.failed_tasks < threshold:
        return None
    failed = (
        f"deployment {primary.deployment_id} ({primary.revision}) failed: "
        f"{primary.failed_tasks} tasks failed to start or become healthy"
    )
    previous = next(
        (
            d
            for d in reversed(snapshot.deployments)
            if d.deployment_id != primary.deployment_id and d.rollout_state == RolloutState.COMPLETED
        ),
        None,
    )
    if not snapshot.config.rollback or previous is None:
        return Plan(
            Verdict.FAILED, primary.revision, events=(f"{failed}; no revision to roll back to, still retrying.",)
        )
    return Plan(
        Verdict.ROLL_BACK,
        primary.revision,
        rollback_to=previous,
        events=(f"{failed}. Rolling back to {previous.revision}.",),
    )
