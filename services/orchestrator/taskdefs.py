"""Task definitions in the shape of ECS ``RegisterTaskDefinition``, and their registry with revisions.

A task definition file (``infra/taskdefs/*.json``) is the JSON you would hand to
``aws ecs register-task-definition --cli-input-json``, restricted to the fields
pixfleet runs: ``family``, ``taskRoleArn``, ``cpu``, ``memory``,
``containerDefinitions`` (``name``, ``image``, ``command``, ``environment``,
``portMappings``, ``essential``, ``stopTimeout``, ``healthCheck``, ``cpu``,
``memory``) and, optionally, ``networkMode``, ``requiresCompatibilities`` and
``executionRoleArn``. Unknown fields are errors at every level, and every
problem is reported at once with the file and the JSON path of the field.

``taskRoleArn`` may be a full role ARN or a bare role name ("pixfleet-worker");
:func:`resolve_role_arn` turns the latter into the account's ARN.

Port placeholders: in environment values and health-check command strings,
``${PORT_<containerPort>}`` stands for the host port the runtime assigned to that
container port (a mapping without ``hostPort`` gets a dynamic one). A
placeholder must name a ``containerPort`` of the same container.

The shipped ``api.json`` sets ``PIXFLEET_API_HOST=127.0.0.1``: the process
runtime shares the host's network, and loopback keeps the API off the LAN as
``pixfleet up`` always did. A container runtime must override it with
``0.0.0.0`` for the published port to reach the process.

:class:`TaskDefinitionRegistry` numbers revisions per family as ECS does
(registering changed content makes ``family:N+1``; identical content is
idempotent), marks deregistered revisions INACTIVE, and keeps everything in a
JSON state file so revisions survive orchestrator restarts.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from infra import TASKDEFS_DIR

ACTIVE = "ACTIVE"
INACTIVE = "INACTIVE"

# Where the shipped task definitions live (infra/taskdefs/ next to the infra package).
SHIPPED_DIR = TASKDEFS_DIR

_FAMILY = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_CONTAINER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}$", re.ASCII)
_ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$", re.ASCII)
_PLACEHOLDER = re.compile(r"\$\{PORT_([^}]*)\}")
_PORT_NUMBER = re.compile(r"^[0-9]{1,5}$")
_VCPU = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*vcpu$", re.IGNORECASE)
_GB = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*gb$", re.IGNORECASE)

NETWORK_MODES = ("bridge", "host", "awsvpc", "none")
COMPATIBILITIES = ("EC2", "FARGATE", "EXTERNAL")
PROTOCOLS = ("tcp", "udp")


# --- errors --------------------------------------------------------------------------------------


class TaskDefinitionError(ValueError):
    """A task definition is invalid; ``problems`` holds every ``path: message`` found in ``source``."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class _LookupError(KeyError):
    """A KeyError whose ``str()`` is its message (KeyError's own quotes it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownTaskDefinition(_LookupError):
    """No such family or revision (or, where only ACTIVE ones count, an INACTIVE revision)."""


class UnknownRole(_LookupError):
    """A bare ``taskRoleArn`` names none of the stack's roles."""


class PlaceholderError(ValueError):
    """A ``${PORT_n}`` placeholder has no host port to stand for."""


# --- the model -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthCheck:
    """ECS ``healthCheck``: ``command`` starts with ``CMD`` (exec form) or ``CMD-SHELL`` (one shell string)."""

    command: tuple[str, ...]
    interval: int = 30
    timeout: int = 5
    retries: int = 3
    start_period: int = 0

    def to_ecs_json(self) -> dict[str, Any]:
        return {
            "command": list(self.command),
            "interval": self.interval,
            "timeout": self.timeout,
            "retries": self.retries,
            "startPeriod": self.start_period,
        }


@dataclass(frozen=True)
class PortMapping:
    """ECS ``portMappings`` entry; ``host_port`` None means the runtime picks a free port."""

    container_port: int
    host_port: int | None = None
    protocol: str = "tcp"

    @property
    def dynamic(self) -> bool:
        return self.host_port is None

    def to_ecs_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"containerPort": self.container_port}
        if self.host_port is not None:
            doc["hostPort"] = self.host_port
        doc["protocol"] = self.protocol
        return doc


@dataclass(frozen=True)
class ContainerDefinition:
    """One container of a task. The process runtime ignores ``image`` and runs ``command``."""

    name: str
    image: str
    command: tuple[str, ...]
    environment: dict[str, str] = field(default_factory=dict)
    port_mappings: tuple[PortMapping, ...] = ()
    essential: bool = True
    stop_timeout: int = 30
    health_check: HealthCheck | None = None
    cpu: int | None = None
    memory: int | None = None

    def fixed_ports(self) -> dict[int, int]:
        """containerPort → hostPort of the mappings that name their host port."""
        return {m.container_port: m.host_port for m in self.port_mappings if m.host_port is not None}

    def resolved(self, ports: Mapping[int, int]) -> ContainerDefinition:
        """This container with ``${PORT_n}`` substituted in its environment and health-check command.

        ``ports`` maps containerPort → the host port the runtime assigned; fixed
        ``hostPort`` mappings fill in whatever it does not name.
        """
        all_ports = {**self.fixed_ports(), **ports}
        health = self.health_check
        if health is not None:
            health = dataclasses.replace(health, command=render_placeholders(health.command, all_ports))
        return dataclasses.replace(
            self, environment=render_placeholders(self.environment, all_ports), health_check=health
        )

    def to_ecs_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "command": list(self.command),
            "essential": self.essential,
            "environment": [{"name": k, "value": v} for k, v in self.environment.items()],
            "portMappings": [m.to_ecs_json() for m in self.port_mappings],
            "stopTimeout": self.stop_timeout,
        }
        if self.health_check is not None:
            doc["healthCheck"] = self.health_check.to_ecs_json()
        if self.cpu is not None:
            doc["cpu"] = self.cpu
        if self.memory is not None:
            doc["memory"] = self.memory
        return doc


@dataclass(frozen=True)
class TaskDefinition:
    """A parsed task definition; ``revision`` 0 means "not registered yet"."""

    family: str
    revision: int
    task_role_arn: str
    cpu: int
    memory: int
    container_definitions: tuple[ContainerDefinition, ...]
    network_mode: str | None = None
    requires_compatibilities: tuple[str, ...] = ()
    execution_role_arn: str | None = None

    @property
    def key(self) -> str:
        """``family:revision``, the reference ECS's RunTask takes."""
        return f"{self.family}:{self.revision}"

    @property
    def main_container(self) -> ContainerDefinition:
        """The first essential container (parsing guarantees there is one)."""
        return next(c for c in self.container_definitions if c.essential)

    def container(self, name: str) -> ContainerDefinition:
        for c in self.container_definitions:
            if c.name == name:
                return c
        raise KeyError(name)

    def arn(self, region: str, account_id: str, partition: str = "aws") -> str:
        """``arn:aws:ecs:{region}:{account}:task-definition/{family}:{revision}``."""
        return f"arn:{partition}:ecs:{region}:{account_id}:task-definition/{self.family}:{self.revision}"

    def with_revision(self, revision: int) -> TaskDefinition:
        return dataclasses.replace(self, revision=revision)

    def to_ecs_json(self, region: str | None = None, account_id: str | None = None) -> dict[str, Any]:
        """The ECS JSON shape (parses back to an equal definition); the ARN only with region and account."""
        doc: dict[str, Any] = {"family": self.family}
        if self.revision:
            doc["revision"] = self.revision
            if region and account_id:
                doc["taskDefinitionArn"] = self.arn(region, account_id)
        doc["taskRoleArn"] = self.task_role_arn
        if self.execution_role_arn is not None:
            doc["executionRoleArn"] = self.execution_role_arn
        if self.network_mode is not None:
            doc["networkMode"] = self.network_mode
        if self.requires_compatibilities:
            doc["requiresCompatibilities"] = list(self.requires_compatibilities)
        doc["cpu"] = str(self.cpu)
        doc["memory"] = str(self.memory)
        doc["containerDefinitions"] = [c.to_ecs_json() for c in self.container_definitions]
        return doc

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the content, revision excluded (environment order does not count)."""
        doc = self.to_ecs_json()
        doc.pop("revision", None)
        for container in doc["containerDefinitions"]:
            container["environment"].sort(key=lambda e: e["name"])
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


# --- placeholders and roles ----------------------------------------------------------------------

_Rendered = TypeVar("_Rendered", str, list, tuple, dict)


def render_placeholders(value: _Rendered, ports: Mapping[int, int]) -> _Rendered:
    """Replace ``${PORT_n}`` by ``ports[n]`` in a string, or in each string of a list, tuple or dict's values."""
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: _host_port(m, ports), value)
    if isinstance(value, (list, tuple)):
        return type(value)(render_placeholders(v, ports) for v in value)
    if isinstance(value, Mapping):
        return {k: render_placeholders(v, ports) for k, v in value.items()}
    raise TypeError(f"cannot render placeholders in {type(value).__name__}")


def _host_port(match: re.Match[str], ports: Mapping[int, int]) -> str:
    raw = match.group(1)
    if not _PORT_NUMBER.match(raw) or int(raw) not in ports:
        known = ", ".join(str(p) for p in sorted(ports)) or "none"
        raise PlaceholderError(f"{match.group(0)}: no host port for containerPort {raw!r} (assigned: {known})")
    return str(ports[int(raw)])


def resolve_role_arn(value: str, role_arns: Mapping[str, str]) -> str:
    """A ``taskRoleArn`` as an ARN: full ARNs pass; a role key ("worker") or name ("pixfleet-worker") is looked up.

    ``role_arns`` is the stack's key → ARN table (``StackOutputs.role_arns``).
    """
    if value.startswith("arn:"):
        return value
    if value in role_arns:
        return role_arns[value]
    for arn in role_arns.values():
        if arn.rsplit("/", 1)[-1] == value:
            return arn
    known = ", ".join(f"{k} ({arn.rsplit('/', 1)[-1]})" for k, arn in role_arns.items()) or "none"
    raise UnknownRole(f"task role {value!r} is neither an ARN nor one of the stack's roles: {known}")


# --- parsing -------------------------------------------------------------------------------------
#
# Two layers, every problem of both reported at once:
# 1. AWS's own model: botocore's ParamValidator checks the body against RegisterTaskDefinition's input shape
#    (unknown fields, wrong types, missing members), in botocore's words and field paths — what AWS refuses,
#    pixfleet refuses the same way;
# 2. what pixfleet itself needs or cannot do, each with its path: the fields it runs (a field it would
#    silently ignore is refused instead), one container per task, port placeholders, sizes and ranges.

_OUTPUT_ONLY = (
    "taskDefinitionArn",
    "revision",
    "status",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
    "requiresAttributes",
    "compatibilities",
)
SUPPORTED_FIELDS = (
    "family",
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "containerDefinitions",
    "tags",
)
SUPPORTED_CONTAINER_FIELDS = (
    "name",
    "image",
    "command",
    "environment",
    "portMappings",
    "essential",
    "stopTimeout",
    "healthCheck",
    "cpu",
    "memory",
)
SUPPORTED_PORT_FIELDS = ("containerPort", "hostPort", "protocol", "name")
SUPPORTED_HEALTH_FIELDS = ("command", "interval", "timeout", "retries", "startPeriod")


@functools.cache
def _ecs_shape(name: str) -> Any:
    """An input shape of botocore's ECS model (the request of RegisterTaskDefinition, or a structure in it)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("ecs")
    if name == "RegisterTaskDefinitionRequest":
        return model.operation_model("RegisterTaskDefinition").input_shape
    return model.shape_for(name)


def _model_problems(body: dict[str, Any]) -> list[str]:
    """botocore's verdict on ``body`` as a RegisterTaskDefinition request: one line per problem."""
    from botocore.validate import ParamValidator

    report = ParamValidator().validate(body, _ecs_shape("RegisterTaskDefinitionRequest"))
    return report.generate_report().splitlines() if report.has_errors() else []


class _Problems:
    """Collects ``path: message`` problems."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}" if path else message)

    def unsupported(self, obj: Mapping[str, Any], path: str, supported: tuple[str, ...], shape: str) -> None:
        """ECS fields pixfleet does not run (fields ECS does not know are the model layer's to report)."""
        known = set(_ecs_shape(shape).members)
        for key in obj:
            if key in known and key not in supported:
                where = f"{path}.{key}" if path else key
                self.add(where, f"pixfleet does not run this field (it runs {', '.join(supported)})")

    def required(self, obj: Mapping[str, Any], path: str, *keys: str) -> None:
        for key in keys:
            if key not in obj:
                self.add(f"{path}.{key}" if path else key, "required by pixfleet")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_in(
    p: _Problems, obj: Mapping[str, Any], key: str, path: str, lo: int, hi: int, default: int | None
) -> int | None:
    if key not in obj:
        return default
    value = obj[key]
    if not _is_int(value):
        return default  # the model layer reports the type
    if not lo <= value <= hi:
        p.add(f"{path}.{key}" if path else key, f"must be in {lo}..{hi}")
        return default
    return int(value)


def parse_task_definition(doc: Any, source: str) -> TaskDefinition:
    """Validate an ECS task definition (a RegisterTaskDefinition body, or DescribeTaskDefinition's answer);
    raise :class:`TaskDefinitionError` naming every problem."""
    if not isinstance(doc, dict):
        raise TaskDefinitionError(source, ["must be a JSON object"])
    body = {k: v for k, v in doc.items() if k not in _OUTPUT_ONLY}
    problems = _model_problems(body)
    p = _Problems()
    p.unsupported(body, "", SUPPORTED_FIELDS, "RegisterTaskDefinitionRequest")
    p.required(body, "", "taskRoleArn", "cpu", "memory")
    family = body.get("family")
    if isinstance(family, str) and not _FAMILY.match(family):
        p.add("family", "must be 1-255 letters, digits, '-' or '_'")
    revision = doc.get("revision", 0)
    if not _is_int(revision) or revision < 0:
        p.add("revision", "must be a positive integer")
        revision = 0
    role = _role(p, body, "taskRoleArn")
    execution_role = _role(p, body, "executionRoleArn")
    cpu = _units(p, body, "cpu", _VCPU, 1024, 'CPU units, e.g. "256" or "1 vCPU"')
    memory = _units(p, body, "memory", _GB, 1024, 'MiB, e.g. "512" or "2 GB"')
    network_mode = body.get("networkMode")
    if network_mode is not None and network_mode not in NETWORK_MODES:
        p.add("networkMode", f"must be one of {', '.join(NETWORK_MODES)}")
        network_mode = None
    compat = body.get("requiresCompatibilities") or []
    if isinstance(compat, list) and any(c not in COMPATIBILITIES for c in compat):
        p.add("requiresCompatibilities", f"each must be one of {', '.join(COMPATIBILITIES)}")
    containers = _containers(p, body.get("containerDefinitions"), network_mode)
    _check_sizes(p, containers, cpu, memory)
    arn = doc.get("taskDefinitionArn")
    if (
        arn is not None
        and family
        and revision
        and (
            not isinstance(arn, str)
            or not arn.startswith("arn:")
            or not arn.endswith(f":task-definition/{family}:{revision}")
        )
    ):
        p.add("taskDefinitionArn", f"must be the ARN of task-definition/{family}:{revision}")
    problems += p.items
    if problems:
        raise TaskDefinitionError(source, problems)
    assert isinstance(family, str) and role and cpu and memory
    return TaskDefinition(
        family=family,
        revision=revision,
        task_role_arn=role,
        cpu=cpu,
        memory=memory,
        container_definitions=containers,
        network_mode=network_mode,
        requires_compatibilities=tuple(compat) if isinstance(compat, list) else (),
        execution_role_arn=execution_role,
    )


def _role(p: _Problems, obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not (isinstance(value, str) and (_ROLE_ARN.match(value) or _ROLE_NAME.match(value))):
        p.add(key, "must be an IAM role ARN or a role name")
        return None
    return value


def _units(p: _Problems, obj: Mapping[str, Any], key: str, unit: re.Pattern[str], scale: int, what: str) -> int | None:
    """Task-level cpu/memory: ECS takes strings ("1024", "1 vCPU", "2 GB")."""
    if key not in obj:
        return None
    value = obj[key]
    number: int | None = None
    if isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    elif isinstance(value, str) and (m := unit.match(value.strip())):
        number = int(float(m.group(1)) * scale)
    if number is None or number < 1:
        if isinstance(value, str):  # other types: the model layer says so
            p.add(key, f"must be a positive number of {what}")
        return None
    return number


def _containers(p: _Problems, value: Any, network_mode: str | None) -> tuple[ContainerDefinition, ...]:
    if not isinstance(value, list):
        return ()  # missing or not a list: the model layer says so
    if len(value) != 1:
        p.add("containerDefinitions", f"pixfleet runs exactly one container per task (got {len(value)})")
    containers = [
        c for i, item in enumerate(value) if (c := _container(p, item, f"containerDefinitions[{i}]", network_mode))
    ]
    if containers and not containers[0].essential:
        p.add("containerDefinitions[0].essential", "the task's container must be essential")
    return tuple(containers)


def _container(p: _Problems, item: Any, path: str, network_mode: str | None) -> ContainerDefinition | None:
    if not isinstance(item, dict):
        return None
    before = len(p.items)
    p.unsupported(item, path, SUPPORTED_CONTAINER_FIELDS, "ContainerDefinition")
    p.required(item, path, "name", "image", "command")
    name = item.get("name")
    if isinstance(name, str) and not _CONTAINER_NAME.match(name):
        p.add(f"{path}.name", "must be 1-255 letters, digits, '-' or '_'")
    command = item.get("command")
    if isinstance(command, list) and not command:
        p.add(f"{path}.command", "must not be empty")
    for j, arg in enumerate(command if isinstance(command, list) else []):
        if isinstance(arg, str) and _PLACEHOLDER.search(arg):
            p.add(
                f"{path}.command[{j}]", "port placeholders are substituted only in environment and healthCheck.command"
            )
    essential = item.get("essential", True)
    stop_timeout = _int_in(p, item, "stopTimeout", path, 2, 120, 30)
    cpu = _int_in(p, item, "cpu", path, 0, 10 * 1024 * 1024, None)
    memory = _int_in(p, item, "memory", path, 6, 10 * 1024 * 1024, None)
    ports = _port_mappings(p, item.get("portMappings", []), f"{path}.portMappings", network_mode)
    container_ports = {m.container_port for m in ports}
    environment = _environment(p, item.get("environment", []), f"{path}.environment", container_ports)
    health = (
        _health_check(p, item["healthCheck"], f"{path}.healthCheck", container_ports) if "healthCheck" in item else None
    )
    if len(p.items) > before or not isinstance(name, str) or not isinstance(item.get("image"), str):
        return None
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
        return None
    return ContainerDefinition(
        name=name,
        image=item["image"],
        command=tuple(command),
        environment=environment,
        port_mappings=ports,
        essential=essential if isinstance(essential, bool) else True,
        stop_timeout=stop_timeout or 30,
        health_check=health,
        cpu=cpu,
        memory=memory,
    )


def _port_mappings(p: _Problems, value: Any, path: str, network_mode: str | None) -> tuple[PortMapping, ...]:
    if not isinstance(value, list):
        return ()
    mappings: list[PortMapping] = []
    seen: set[tuple[int, str]] = set()
    for i, item in enumerate(value):
        at = f"{path}[{i}]"
        if not isinstance(item, dict):
            continue
        p.unsupported(item, at, SUPPORTED_PORT_FIELDS, "PortMapping")
        p.required(item, at, "containerPort")
        container_port = _int_in(p, item, "containerPort", at, 1, 65535, None)
        host_port = _int_in(p, item, "hostPort", at, 0, 65535, None) or None  # 0 = dynamic, as in ECS
        protocol = item.get("protocol", "tcp")
        if protocol not in PROTOCOLS:
            p.add(f"{at}.protocol", f"must be one of {', '.join(PROTOCOLS)}")
            continue
        if container_port is None:
            continue
        if network_mode in ("host", "awsvpc") and host_port not in (None, container_port):
            p.add(f"{at}.hostPort", f"must equal containerPort in {network_mode} network mode")
        if (container_port, protocol) in seen:
            p.add(f"{at}.containerPort", f"{container_port}/{protocol} is mapped twice")
        seen.add((container_port, protocol))
        mappings.append(PortMapping(container_port, host_port, protocol))
    return tuple(mappings)


def _environment(p: _Problems, value: Any, path: str, container_ports: set[int]) -> dict[str, str]:
    if not isinstance(value, list):
        return {}
    env: dict[str, str] = {}
    for i, item in enumerate(value):
        at = f"{path}[{i}]"
        if not isinstance(item, dict):
            continue
        p.required(item, at, "name", "value")
        name, text = item.get("name"), item.get("value")
        if isinstance(name, str) and not _ENV_NAME.match(name):
            p.add(f"{at}.name", "must be an environment variable name")
            continue
        if not isinstance(name, str) or not isinstance(text, str):
            continue
        _check_placeholders(p, text, f"{at}.value", container_ports)
        if name in env:
            p.add(f"{at}.name", f"duplicate variable {name}")
        env[name] = text
    return env


def _health_check(p: _Problems, value: Any, path: str, container_ports: set[int]) -> HealthCheck | None:
    if not isinstance(value, dict):
        return None
    p.unsupported(value, path, SUPPORTED_HEALTH_FIELDS, "HealthCheck")
    command = value.get("command")
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        return None  # the model layer reports a missing or mistyped command
    if not command:
        p.add(f"{path}.command", "must not be empty")
    elif command[0] == "CMD" and len(command) < 2:
        p.add(f"{path}.command", '["CMD", executable, args…] needs an executable')
    elif command[0] == "CMD-SHELL" and len(command) != 2:
        p.add(f"{path}.command", '["CMD-SHELL", "shell command"] takes exactly one string')
    elif command[0] not in ("CMD", "CMD-SHELL"):
        p.add(f"{path}.command[0]", 'must be "CMD" or "CMD-SHELL"')
    for j, arg in enumerate(command[1:], start=1):
        _check_placeholders(p, arg, f"{path}.command[{j}]", container_ports)
    interval = _int_in(p, value, "interval", path, 5, 300, 30)
    timeout = _int_in(p, value, "timeout", path, 2, 60, 5)
    retries = _int_in(p, value, "retries", path, 1, 10, 3)
    start_period = _int_in(p, value, "startPeriod", path, 0, 300, 0)
    if not command:
        return None
    return HealthCheck(tuple(command), interval or 30, timeout or 5, retries or 3, start_period or 0)


def _check_placeholders(p: _Problems, text: str, path: str, container_ports: set[int]) -> None:
    for m in _PLACEHOLDER.finditer(text):
        raw = m.group(1)
        if not _PORT_NUMBER.match(raw) or int(raw) not in container_ports:
            known = ", ".join(str(c) for c in sorted(container_ports)) or "none"
            p.add(path, f"{m.group(0)} names no containerPort of this container's portMappings ({known})")


def _check_sizes(
    p: _Problems, containers: tuple[ContainerDefinition, ...], cpu: int | None, memory: int | None
) -> None:
    container_cpu = sum(c.cpu or 0 for c in containers)
    container_memory = sum(c.memory or 0 for c in containers)
    if cpu and container_cpu > cpu:
        p.add("containerDefinitions", f"containers reserve {container_cpu} CPU units, more than the task's {cpu}")
    if memory and container_memory > memory:
        p.add("containerDefinitions", f"containers reserve {container_memory} MiB, more than the task's {memory}")


def load_task_definition_file(path: Path) -> TaskDefinition:
    """Parse one JSON file; JSON syntax errors are reported as :class:`TaskDefinitionError` too."""
    try:
        doc = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise TaskDefinitionError(
            str(path), [f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"]
        ) from exc
    return parse_task_definition(doc, str(path))


# --- the registry --------------------------------------------------------------------------------


@dataclass
class _Revision:
    taskdef: TaskDefinition
    status: str
    source: str
    registered_at: float


class TaskDefinitionRegistry:
    """Families and their numbered revisions, persisted to ``state_path`` (JSON) after every change.

    ``register`` makes revision latest+1 when the content differs from the family's
    latest revision, and returns that latest revision unchanged when it is
    identical and ACTIVE (a deregistered revision is never brought back: identical
    content then gets a new number, as in ECS). Revision numbers are never reused.
    Not safe for several processes writing one state file at once.
    """

    def __init__(self, state_path: Path | None = None):
        self.state_path = Path(state_path) if state_path is not None else None
        self._families: dict[str, list[_Revision]] = {}
        if self.state_path is not None and self.state_path.exists():
            self._load()

    # --- queries ----------------------------------------------------------------------------

    def families(self) -> list[str]:
        return sorted(self._families)

    def revisions(self, family: str) -> list[TaskDefinition]:
        """Every revision of ``family``, oldest first, INACTIVE ones included."""
        return [r.taskdef for r in self._family(family)]

    def get(self, ref: str, *, active_only: bool = False) -> TaskDefinition:
        """``family`` → its latest ACTIVE revision; ``family:rev`` (or its ARN) → that revision.

        With ``active_only`` an explicit INACTIVE revision is refused, as RunTask would.
        """
        return self._entry(ref, active_only=active_only).taskdef

    def status(self, ref: str) -> str:
        """``ACTIVE`` or ``INACTIVE``."""
        return self._entry(ref).status

    # --- changes ----------------------------------------------------------------------------

    def registered_at(self, ref: str) -> float:
        """When the revision was registered (epoch seconds)."""
        return self._entry(ref).registered_at

    def register(
        self,
        doc_or_taskdef: Mapping[str, Any] | TaskDefinition,
        source: str = "<register>",
        *,
        always_new: bool = False,
    ) -> TaskDefinition:
        """Register a definition (an ECS-shaped dict or a parsed one); return the revision that holds it.

        ``always_new``: make a new revision even for identical content, as ECS's RegisterTaskDefinition does.
        """
        taskdef = (
            doc_or_taskdef
            if isinstance(doc_or_taskdef, TaskDefinition)
            else parse_task_definition(doc_or_taskdef, source)
        )
        history = self._families.get(taskdef.family, [])
        if (
            not always_new
            and history
            and history[-1].status == ACTIVE
            and history[-1].taskdef.fingerprint == taskdef.fingerprint
        ):
            return history[-1].taskdef
        registered = taskdef.with_revision(len(history) + 1)
        self._families.setdefault(taskdef.family, []).append(_Revision(registered, ACTIVE, source, time.time()))
        self._save()
        return registered

    def load_dir(self, path: Path) -> list[TaskDefinition]:
        """Register every ``*.json`` of a directory (sorted by name); all files are checked before any is registered."""
        parsed: list[tuple[TaskDefinition, str]] = []
        errors: list[str] = []
        owners: dict[str, str] = {}
        for file in sorted(Path(path).glob("*.json")):
            try:
                taskdef = load_task_definition_file(file)
            except TaskDefinitionError as exc:
                errors.append(str(exc))
                continue
            if taskdef.family in owners:
                errors.append(f"{file}: family: {taskdef.family!r} is already defined by {owners[taskdef.family]}")
                continue
            owners[taskdef.family] = str(file)
            parsed.append((taskdef, str(file)))
        if errors:
            raise TaskDefinitionError(str(path), errors)
        return [self.register(taskdef, source) for taskdef, source in parsed]

    def deregister(self, ref: str) -> TaskDefinition:
        """Mark ``family:rev`` INACTIVE (ECS's DeregisterTaskDefinition needs the revision too); idempotent."""
        _, revision = _split_ref(ref)
        if revision is None:
            raise UnknownTaskDefinition(f"deregister needs family:revision, got {ref!r}")
        entry = self._entry(ref)
        if entry.status != INACTIVE:
            entry.status = INACTIVE
            self._save()
        return entry.taskdef

    # --- internals --------------------------------------------------------------------------

    def _family(self, family: str) -> list[_Revision]:
        if family not in self._families:
            known = ", ".join(self.families()) or "none registered"
            raise UnknownTaskDefinition(f"unknown task definition family {family!r} (known: {known})")
        return self._families[family]

    def _entry(self, ref: str, *, active_only: bool = False) -> _Revision:
        family, revision = _split_ref(ref)
        history = self._family(family)
        if revision is None:
            for entry in reversed(history):
                if entry.status == ACTIVE:
                    return entry
            raise UnknownTaskDefinition(f"{family} has no ACTIVE revision ({self._describe(history)})")
        if not 1 <= revision <= len(history):
            raise UnknownTaskDefinition(f"unknown task definition {family}:{revision} ({self._describe(history)})")
        entry = history[revision - 1]
        if active_only and entry.status != ACTIVE:
            raise UnknownTaskDefinition(f"{family}:{revision} is INACTIVE ({self._describe(history)})")
        return entry

    @staticmethod
    def _describe(history: list[_Revision]) -> str:
        return "revisions: " + ", ".join(r.taskdef.key + ("" if r.status == ACTIVE else " INACTIVE") for r in history)

    def _save(self) -> None:
        if self.state_path is None:
            return
        state = {
            "version": 1,
            "families": {
                family: [
                    {
                        "status": r.status,
                        "source": r.source,
                        "registeredAt": r.registered_at,
                        "taskDefinition": r.taskdef.to_ecs_json(),
                    }
                    for r in history
                ]
                for family, history in sorted(self._families.items())
            },
        }
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_path.parent, prefix=self.state_path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(state, out, indent=2)
                out.write("\n")
            os.replace(tmp, self.state_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _load(self) -> None:
        assert self.state_path is not None
        source = str(self.state_path)
        try:
            state = json.loads(self.state_path.read_text())
            families = state["families"]
            for family, history in families.items():
                revisions: list[_Revision] = []
                for i, item in enumerate(history, start=1):
                    taskdef = parse_task_definition(item["taskDefinition"], f"{source}#{family}:{i}")
                    if taskdef.family != family or taskdef.revision != i or item["status"] not in (ACTIVE, INACTIVE):
                        raise TaskDefinitionError(source, [f"families.{family}[{i - 1}]: inconsistent revision record"])
                    registered_at = float(item.get("registeredAt", 0))
                    revisions.append(_Revision(taskdef, item["status"], item.get("source", ""), registered_at))
                self._families[family] = revisions
        except TaskDefinitionError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TaskDefinitionError(source, [f"unreadable registry state: {exc!r}"]) from exc


def _split_ref(ref: str) -> tuple[str, int | None]:
    """``family``, ``family:rev`` or ``arn:…:task-definition/family:rev`` → (family, rev | None)."""
    if ref.startswith("arn:") and ":task-definition/" in ref:
        ref = ref.split(":task-definition/", 1)[1]
    family, sep, rev = ref.rpartition(":")
    if not sep:
        return ref, None
    if not rev.isdigit() or not family:
        raise UnknownTaskDefinition(f"bad task definition reference {ref!r} (expected family or family:revision)")
    return family, int(rev)
