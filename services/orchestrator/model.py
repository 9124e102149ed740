"""The orchestrator's nouns, shaped like ECS's: services, deployments, tasks and service events.

States are :class:`enum.StrEnum` members whose values are ECS's own words, so the JSON
(the API's answers and ``state.json``) carries the same strings as before.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from services.orchestrator.runtime import TaskHandle
from services.orchestrator.scaling import ScalingPolicy, ScalingState
from services.orchestrator.throttle import ThrottleState


class TaskState(StrEnum):
    """A task's ``lastStatus`` (and ``desiredStatus``), as in ECS with the intermediate states folded in."""

    PROVISIONING = "PROVISIONING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"


class HealthStatus(StrEnum):
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"
    UNKNOWN = "UNKNOWN"


class DeploymentStatus(StrEnum):
    """PRIMARY: the revision the service runs towards; ACTIVE: being replaced; INACTIVE: done with."""

    PRIMARY = "PRIMARY"
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"


class RolloutState(StrEnum):
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class DeploymentConfig:
    """ECS's deploymentConfiguration, with its circuit breaker (validated by :mod:`services_file`)."""

    minimum_healthy_percent: int = 100
    maximum_percent: int = 200
    rollback: bool = True
    failure_threshold: int = 3


@dataclass(frozen=True)
class LoadBalancerRef:
    """One entry of ECS's ``loadBalancers``: which container port of the task is a target of which group."""

    target_group_arn: str
    container_name: str
    container_port: int


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    task_definition: str
    desired_count: int = 1
    scaling: ScalingPolicy | None = None
    deployment: DeploymentConfig = DeploymentConfig()
    load_balancers: tuple[LoadBalancerRef, ...] = ()


@dataclass
class Task:
    """One running copy of a task definition."""

    task_id: str
    taskdef: str
    service: str | None
    group: str
    state: TaskState = TaskState.PROVISIONING
    desired_status: TaskState = TaskState.RUNNING
    health: HealthStatus = HealthStatus.UNKNOWN
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    stopping_at: float | None = None
    stopped_at: float | None = None
    stop_reason: str | None = None
    exit_code: int | None = None
    handle: TaskHandle | None = None  # set once the runtime started it
    overrides: dict[str, str] = field(default_factory=dict)  # RunTask's environment overrides
    command: list[str] | None = None  # RunTask's command override
    started_by: str | None = None  # RunTask's startedBy
    stop_code: str | None = None  # set by StopTask (UserInitiated); otherwise derived from how it stopped
    token: str = ""
    health_failures: int = 0
    last_health: dict[str, Any] | None = None
    healthy_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.state in (TaskState.PROVISIONING, TaskState.RUNNING)

    @property
    def in_flight(self) -> int | None:
        return (self.last_health or {}).get("in_flight")

    def to_state(self) -> dict[str, Any]:
        state = asdict(self)
        state["handle"] = self.handle.to_json() if self.handle else {}
        return state

    @classmethod
    def from_state(cls, raw: dict[str, Any]) -> Task:
        """A task saved by :meth:`to_state`; also reads the older layout (overrides inside the handle)."""
        raw = dict(raw)
        handle = raw.pop("handle", None) or {}
        overrides = raw.pop("overrides", None) or handle.get("overrides") or {}
        return cls(
            **{k: v for k, v in raw.items() if k in _TASK_FIELDS},
            state=TaskState(raw.get("state", TaskState.PROVISIONING)),
            desired_status=TaskState(raw.get("desired_status", TaskState.RUNNING)),
            health=HealthStatus(raw.get("health", HealthStatus.UNKNOWN)),
            handle=TaskHandle.from_json(handle),
            overrides=dict(overrides),
        )


_TASK_FIELDS = set(Task.__dataclass_fields__) - {"state", "desired_status", "health", "handle", "overrides"}


@dataclass
class Deployment:
    deployment_id: str
    taskdef: str
    status: DeploymentStatus = DeploymentStatus.PRIMARY
    rollout_state: RolloutState = RolloutState.IN_PROGRESS
    reason: str = ""
    failed_tasks: int = 0
    created_at: float = field(default_factory=time.time)

    @classmethod
    def new(cls, taskdef: str, reason: str = "") -> Deployment:
        return cls(deployment_id=f"ecs-svc/{uuid.uuid4().hex[:16]}", taskdef=taskdef, reason=reason)

    @classmethod
    def from_state(cls, raw: dict[str, Any]) -> Deployment:
        return cls(
            **{**raw, "status": DeploymentStatus(raw["status"]), "rollout_state": RolloutState(raw["rollout_state"])}
        )


@dataclass
class Service:
    config: ServiceConfig
    desired_count: int
    deployments: list[Deployment]
    scaling: ScalingPolicy | None = None
    scaling_state: ScalingState = field(default_factory=ScalingState)
    last_decision: str = ""
    throttle: dict[str, ThrottleState] = field(default_factory=dict)  # task definition → launch throttle
    steady: bool = False
    # Deployments the circuit breaker failed (and when), shown as ECS does while the rollback runs; not saved.
    failed_recently: list[tuple[Deployment, float]] = field(default_factory=list)
    unplaced: str | None = None  # why the last launch did not fit the instance (RESOURCE:…), if it did not

    def throttle_for(self, taskdef: str) -> ThrottleState:
        return self.throttle.get(taskdef, ThrottleState())

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def primary(self) -> Deployment:
        return next(d for d in self.deployments if d.status == DeploymentStatus.PRIMARY)

    def to_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "desired_count": self.desired_count,
            "deployments": [asdict(d) for d in self.deployments],
            "scaling": asdict(self.scaling) if self.scaling else None,
        }

    def restore(self, raw: dict[str, Any]) -> None:
        self.desired_count = raw["desired_count"]
        self.deployments = [Deployment.from_state(d) for d in raw["deployments"]]
        if raw.get("scaling") and self.scaling:
            self.scaling = replace(self.scaling, **raw["scaling"])


@dataclass(frozen=True)
class Event:
    id: str
    created_at: float
    service: str | None
    message: str

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "createdAt": self.created_at, "service": self.service, "message": self.message}


class EventLog:
    """ECS-style service events: newest first over the API, also appended to a JSON-lines file."""

    def __init__(self, path: Path | None, keep: int = 1000):
        self.path = path
        self._events: deque[Event] = deque(maxlen=keep)
        if path and path.exists():
            for line in path.read_text().splitlines()[-keep:]:
                try:
                    raw = json.loads(line)
                    self._events.append(Event(raw["id"], raw["createdAt"], raw.get("service"), raw["message"]))
                except (ValueError, KeyError):
                    continue
        self.listeners: list[asyncio.Queue[Event]] = []

    def add(self, service: str | None, message: str) -> Event:
        event = Event(
            uuid.uuid4().hex[:12], time.time(), service, f"(service {service}) {message}" if service else message
        )
        self._events.append(event)
        if self.path:
            with self.path.open("a") as f:
                f.write(json.dumps(event.public()) + "\n")
        for queue in list(self.listeners):
            queue.put_nowait(event)
        return event

    def newest_first(self, limit: int = 100, service: str | None = None) -> list[Event]:
        events = [e for e in reversed(self._events) if service is None or e.service == service]
        return events[:limit]
