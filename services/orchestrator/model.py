"""The orchestrator's nouns, shaped like ECS's: services, deployments, tasks and service events."""

from __future__ import annotations

import json
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from services.orchestrator.scaling import ScalingPolicy, ScalingState
from services.orchestrator.throttle import ThrottleState

# Task lifecycle, as in ECS (the intermediate ECS states are folded into these four).
PROVISIONING, RUNNING, STOPPING, STOPPED = "PROVISIONING", "RUNNING", "STOPPING", "STOPPED"
HEALTHY, UNHEALTHY, UNKNOWN = "HEALTHY", "UNHEALTHY", "UNKNOWN"


class ServiceConfigError(ValueError):
    pass


@dataclass(frozen=True)
class DeploymentConfig:
    """ECS's deploymentConfiguration, with its circuit breaker."""

    minimum_healthy_percent: int = 100
    maximum_percent: int = 200
    rollback: bool = True
    failure_threshold: int = 3

    def problems(self) -> list[str]:
        p = []
        if not 0 <= self.minimum_healthy_percent <= 100:
            p.append("minimumHealthyPercent must be in 0..100")
        if not 100 <= self.maximum_percent <= 400:
            p.append("maximumPercent must be in 100..400")
        if self.minimum_healthy_percent == 100 and self.maximum_percent == 100:
            p.append("minimumHealthyPercent 100 with maximumPercent 100 leaves no room to replace a task")
        if self.failure_threshold < 1:
            p.append("failureThreshold must be >= 1")
        return p


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    task_definition: str
    desired_count: int = 1
    scaling: ScalingPolicy | None = None
    deployment: DeploymentConfig = DeploymentConfig()


_SCALING_FIELDS = {
    "min": "min",
    "max": "max",
    "targetBacklogPerTask": "target_backlog_per_task",
    "acceptableLatency": "acceptable_latency",
    "taskSlots": "task_slots",
    "scaleOutCooldown": "scale_out_cooldown",
    "scaleInCooldown": "scale_in_cooldown",
    "activationThreshold": "activation_threshold",
    "countInFlight": "count_in_flight",
    "countDelayed": "count_delayed",
}
_DEPLOYMENT_FIELDS = {
    "minimumHealthyPercent": "minimum_healthy_percent",
    "maximumPercent": "maximum_percent",
    "rollback": "rollback",
    "failureThreshold": "failure_threshold",
}


def _camel(obj: Any, fields: dict[str, str]) -> dict[str, Any]:
    inverse = {v: k for k, v in fields.items()}
    return {inverse[k]: v for k, v in asdict(obj).items()}


def scaling_to_json(policy: ScalingPolicy) -> dict[str, Any]:
    return _camel(policy, _SCALING_FIELDS)


def deployment_to_json(config: DeploymentConfig) -> dict[str, Any]:
    return _camel(config, _DEPLOYMENT_FIELDS)


def _fields(raw: Any, names: dict[str, str], where: str, problems: list[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be an object")
        return {}
    out = {}
    for key, value in raw.items():
        if key not in names:
            problems.append(f"{where}.{key}: unknown field")
        else:
            out[names[key]] = value
    return out


def parse_services(doc: Any, source: str) -> list[ServiceConfig]:
    """Parse ``infra/services.json`` (``{"services": [...]}``); every problem at once, naming the file and field."""
    problems: list[str] = []
    services: list[ServiceConfig] = []
    items = doc.get("services") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ServiceConfigError(f"{source}: services: must be a list")
    for i, item in enumerate(items):
        where = f"services[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be an object")
            continue
        for key in item:
            if key not in ("serviceName", "taskDefinition", "desiredCount", "autoScaling", "deploymentConfiguration"):
                problems.append(f"{where}.{key}: unknown field")
        name, taskdef, desired = item.get("serviceName"), item.get("taskDefinition"), item.get("desiredCount", 1)
        if not isinstance(name, str) or not name:
            problems.append(f"{where}.serviceName: required string")
        if not isinstance(taskdef, str) or not taskdef:
            problems.append(f"{where}.taskDefinition: required string")
        if not isinstance(desired, int) or desired < 0:
            problems.append(f"{where}.desiredCount: must be an integer >= 0")
        scaling = None
        if "autoScaling" in item:
            try:
                scaling = ScalingPolicy(
                    **_fields(item["autoScaling"], _SCALING_FIELDS, f"{where}.autoScaling", problems)
                )
                problems += [f"{where}.autoScaling: {p}" for p in scaling.problems()]
            except TypeError as exc:
                problems.append(f"{where}.autoScaling: {exc}")
        deployment = DeploymentConfig()
        if "deploymentConfiguration" in item:
            try:
                deployment = DeploymentConfig(
                    **_fields(
                        item["deploymentConfiguration"],
                        _DEPLOYMENT_FIELDS,
                        f"{where}.deploymentConfiguration",
                        problems,
                    )
                )
                problems += [f"{where}.deploymentConfiguration: {p}" for p in deployment.problems()]
            except TypeError as exc:
                problems.append(f"{where}.deploymentConfiguration: {exc}")
        if not problems:
            services.append(ServiceConfig(name, taskdef, desired, scaling, deployment))
    names = [s.name for s in services]
    if len(set(names)) != len(names):
        problems.append("serviceName values must be unique")
    if problems:
        raise ServiceConfigError(f"{source}: " + "; ".join(problems))
    return services


def load_services(path: Path) -> list[ServiceConfig]:
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ServiceConfigError(f"{path}: not valid JSON: {exc}") from exc
    return parse_services(doc, str(path))


@dataclass
class Task:
    """One running copy of a task definition."""

    task_id: str
    taskdef: str
    service: str | None
    group: str
    state: str = PROVISIONING
    desired_status: str = RUNNING
    health: str = UNKNOWN
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    stopping_at: float | None = None
    stopped_at: float | None = None
    stop_reason: str | None = None
    exit_code: int | None = None
    handle: dict[str, Any] = field(default_factory=dict)
    token: str = ""
    health_failures: int = 0
    last_health: dict[str, Any] | None = None
    healthy_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.state in (PROVISIONING, RUNNING)

    @property
    def in_flight(self) -> int | None:
        return (self.last_health or {}).get("in_flight")

    def public(self) -> dict[str, Any]:
        """The task as the API shows it (never the token)."""
        return {
            "taskId": self.task_id,
            "group": self.group,
            "service": self.service,
            "taskDefinition": self.taskdef,
            "lastStatus": self.state,
            "desiredStatus": self.desired_status,
            "healthStatus": self.health,
            "createdAt": self.created_at,
            "startedAt": self.started_at,
            "stoppingAt": self.stopping_at,
            "stoppedAt": self.stopped_at,
            "stoppedReason": self.stop_reason,
            "exitCode": self.exit_code,
            "pid": self.handle.get("pid"),
            "containerId": self.handle.get("container_id"),
            "networkBindings": [
                {"containerPort": int(c), "hostPort": h} for c, h in self.handle.get("ports", {}).items()
            ],
            "inFlight": self.in_flight,
        }

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, raw: dict[str, Any]) -> Task:
        return cls(**raw)


@dataclass
class Deployment:
    deployment_id: str
    taskdef: str
    status: str = "PRIMARY"  # PRIMARY | ACTIVE | INACTIVE
    rollout_state: str = "IN_PROGRESS"  # IN_PROGRESS | COMPLETED | FAILED
    reason: str = ""
    failed_tasks: int = 0
    created_at: float = field(default_factory=time.time)

    @classmethod
    def new(cls, taskdef: str, reason: str = "") -> Deployment:
        return cls(deployment_id=f"ecs-svc/{uuid.uuid4().hex[:16]}", taskdef=taskdef, reason=reason)


@dataclass
class Service:
    config: ServiceConfig
    desired_count: int
    deployments: list[Deployment]
    scaling: ScalingPolicy | None = None
    scaling_state: ScalingState = ScalingState()
    last_decision: str = ""
    throttle: dict[str, ThrottleState] = field(default_factory=dict)  # task definition → launch throttle
    steady: bool = False

    def throttle_for(self, taskdef: str) -> ThrottleState:
        return self.throttle.get(taskdef, ThrottleState())

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def primary(self) -> Deployment:
        return next(d for d in self.deployments if d.status == "PRIMARY")

    def to_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "desired_count": self.desired_count,
            "deployments": [asdict(d) for d in self.deployments],
            "scaling": asdict(self.scaling) if self.scaling else None,
        }

    def restore(self, raw: dict[str, Any]) -> None:
        self.desired_count = raw["desired_count"]
        self.deployments = [Deployment(**d) for d in raw["deployments"]]
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
        self.listeners: list[Any] = []

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
