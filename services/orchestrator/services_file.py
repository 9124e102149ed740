"""``infra/services.json``: which services the control plane keeps running, read with pydantic models.

The file is ``{"cluster": …, "services": [{"serviceName", "taskDefinition", "desiredCount",
"autoScaling": {…}, "deploymentConfiguration": {…}, "loadBalancers": [{"targetGroupArn",
"containerName", "containerPort"}]}]}`` (``loadBalancers`` as in ECS's ``CreateService``; the target
groups themselves are ``CreateTargetGroup`` bodies in :data:`infra.LOADBALANCING_FILE`). Unknown fields are errors at
every level, types are strict (``"2"`` is not a count), and every problem is reported at
once, naming the file and each field's path (``services[1].autoScaling.max: …``).

The models only read the file: :func:`parse_services` turns them into the frozen
:class:`ServiceConfig`, :class:`ScalingPolicy` and :class:`DeploymentConfig` the control
loop works with, so the loop does not depend on this file's shape (the ECS-API issue
replaces it by ``CreateService`` request bodies).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails

from services.orchestrator.model import DeploymentConfig, LoadBalancerRef, ServiceConfig
from services.orchestrator.scaling import ScalingPolicy


class ServiceConfigError(ValueError):
    pass


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, alias_generator=to_camel, frozen=True)


class AutoScaling(_Model):
    """``autoScaling``: target tracking on backlog per task (see :mod:`scaling`)."""

    min: int = Field(default=ScalingPolicy.min, ge=0)
    max: int = ScalingPolicy.max
    target_backlog_per_task: float = Field(default=ScalingPolicy.target_backlog_per_task, gt=0)
    acceptable_latency: float | None = Field(default=ScalingPolicy.acceptable_latency, gt=0)
    task_slots: int = Field(default=ScalingPolicy.task_slots, ge=1)
    scale_out_cooldown: float = Field(default=ScalingPolicy.scale_out_cooldown, ge=0)
    scale_in_cooldown: float = Field(default=ScalingPolicy.scale_in_cooldown, ge=0)
    activation_threshold: int = Field(default=ScalingPolicy.activation_threshold, ge=1)
    count_in_flight: bool = ScalingPolicy.count_in_flight
    count_delayed: bool = ScalingPolicy.count_delayed
    count_visible: bool = ScalingPolicy.count_visible
    disable_scale_in: bool = ScalingPolicy.disable_scale_in
    disable_scale_out: bool = ScalingPolicy.disable_scale_out

    @model_validator(mode="after")
    def _limits(self) -> AutoScaling:
        if self.max < max(self.min, 1):
            raise ValueError("max must be >= min and >= 1")
        return self

    def policy(self) -> ScalingPolicy:
        return ScalingPolicy(**self.model_dump())


class DeploymentConfiguration(_Model):
    """``deploymentConfiguration``: ECS's, with its circuit breaker's threshold and rollback."""

    minimum_healthy_percent: int = Field(default=DeploymentConfig.minimum_healthy_percent, ge=0, le=100)
    maximum_percent: int = Field(default=DeploymentConfig.maximum_percent, ge=100, le=400)
    rollback: bool = DeploymentConfig.rollback
    failure_threshold: int = Field(default=DeploymentConfig.failure_threshold, ge=1)

    @model_validator(mode="after")
    def _room(self) -> DeploymentConfiguration:
        if self.minimum_healthy_percent == 100 and self.maximum_percent == 100:
            raise ValueError("minimumHealthyPercent 100 with maximumPercent 100 leaves no room to replace a task")
        return self

    def config(self) -> DeploymentConfig:
        return DeploymentConfig(**self.model_dump())


class LoadBalancer(_Model):
    """One of ECS's ``loadBalancers``: the task's ``containerName:containerPort`` joins ``targetGroupArn``."""

    target_group_arn: str = Field(min_length=1)
    container_name: str = Field(min_length=1)
    container_port: int = Field(ge=1, le=65535)

    def ref(self) -> LoadBalancerRef:
        return LoadBalancerRef(self.target_group_arn, self.container_name, self.container_port)


class ServiceEntry(_Model):
    service_name: str = Field(min_length=1)
    task_definition: str = Field(min_length=1)
    desired_count: int = Field(default=ServiceConfig.desired_count, ge=0)
    auto_scaling: AutoScaling | None = None
    deployment_configuration: DeploymentConfiguration = DeploymentConfiguration()
    load_balancers: list[LoadBalancer] = Field(default_factory=list, max_length=5)  # ECS's limit per service

    def config(self) -> ServiceConfig:
        return ServiceConfig(
            name=self.service_name,
            task_definition=self.task_definition,
            desired_count=self.desired_count,
            scaling=self.auto_scaling.policy() if self.auto_scaling else None,
            deployment=self.deployment_configuration.config(),
            load_balancers=tuple(lb.ref() for lb in self.load_balancers),
        )


class ServicesFile(_Model):
    cluster: str | None = None
    services: list[ServiceEntry]

    @field_validator("services")
    @classmethod
    def _unique(cls, services: list[ServiceEntry]) -> list[ServiceEntry]:
        names = [s.service_name for s in services]
        if len(set(names)) != len(names):
            raise ValueError("serviceName values must be unique")
        return services


def parse_services(doc: Any, source: str) -> list[ServiceConfig]:
    """Parse the document of ``infra/services.json``; :class:`ServiceConfigError` lists every problem at once."""
    try:
        parsed = ServicesFile.model_validate(doc)
    except ValidationError as exc:
        raise ServiceConfigError(f"{source}: " + "; ".join(problems(exc))) from None
    return [entry.config() for entry in parsed.services]


def load_services(path: Path) -> list[ServiceConfig]:
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ServiceConfigError(f"{path}: not valid JSON: {exc}") from exc
    return parse_services(doc, str(path))


def scaling_problems(policy: ScalingPolicy) -> list[str]:
    """What is wrong with ``policy`` by the rules of ``autoScaling`` (for limits changed at run time)."""
    try:
        AutoScaling.model_validate({to_camel(k): v for k, v in asdict(policy).items()})
    except ValidationError as exc:
        return problems(exc)
    return []


# --- messages ------------------------------------------------------------------------------------

_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "required",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "list_type": "must be a list",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
_BOUND_KEYS = {"greater_than_equal": "ge", "greater_than": "gt", "less_than_equal": "le", "less_than": "lt"}


def problems(error: ValidationError) -> list[str]:
    """``path: message`` for every error pydantic found, in the file's own field names."""
    return [_problem(e) for e in error.errors()]


def _problem(e: ErrorDetails) -> str:
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in e["loc"]).lstrip(".")
    kind, ctx = e["type"], e.get("ctx") or {}
    if kind == "value_error":  # our own validators: their words as they are
        message = str(ctx.get("error", e["msg"]))
    elif kind in _BOUNDS:
        bound = ctx[_BOUND_KEYS[kind]]
        message = (
            f"must be {_BOUNDS[kind]} {bound:g}" if isinstance(bound, float) else f"must be {_BOUNDS[kind]} {bound}"
        )
    else:
        message = _MESSAGES.get(kind, e["msg"])
    return f"{path}: {message}" if path else message
