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
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Mapping
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


class _Problems:
    """Collects ``path: message`` problems, like EnvReader does for settings."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}" if path else message)

    def fields(self, obj: Any, path: str, allowed: Iterable[str], required: Iterable[str]) -> dict[str, Any] | None:
        """``obj`` as a dict, with unknown and missing fields reported; None when it is not an object."""
        if not isinstance(obj, dict):
            self.add(path, "must be a JSON object")
            return None
        allowed = set(allowed)
        for key in obj:
            if key not in allowed:
                self.add(_join(path, key), "unknown field")
        for key in required:
            if key not in obj:
                self.add(_join(path, key), "required")
        return obj

    def string(
        self, obj: dict[str, Any], key: str, path: str, pattern: re.Pattern[str] | None = None, what: str = ""
    ) -> str | None:
        if key not in obj:
            return None
        value = obj[key]
        if not isinstance(value, str) or not value or (pattern is not None and not pattern.match(value)):
            self.add(_join(path, key), f"must be {what or 'a non-empty string'}")
            return None
        return value

    def integer(self, obj: dict[str, Any], key: str, path: str, lo: int, hi: int, default: int | None) -> int | None:
        if key not in obj:
            return default
        value = obj[key]
        if not _is_int(value) or not lo <= value <= hi:
            self.add(_join(path, key), f"must be an integer in {lo}..{hi}")
            return default
        return value

    def string_list(self, obj: dict[str, Any], key: str, path: str, *, non_empty: bool) -> tuple[str, ...] | None:
        if key not in obj:
            return None
        value = obj[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or (non_empty and not value):
            self.add(
                _join(path, key), "must be a non-empty list of strings" if non_empty else "must be a list of strings"
            )
            return None
        return tuple(value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_TOP_REQUIRED = ("family", "taskRoleArn", "cpu", "memory", "containerDefinitions")
_TOP_FIELDS = (
    *_TOP_REQUIRED,
    "revision",
    "taskDefinitionArn",
    "networkMode",
    "requiresCompatibilities",
    "executionRoleArn",
)
_CONTAINER_REQUIRED = ("name", "image", "command")
_CONTAINER_FIELDS = (
    *_CONTAINER_REQUIRED,
    "environment",
    "portMappings",
    "essential",
    "stopTimeout",
    "healthCheck",
    "cpu",
    "memory",
)
_HEALTH_FIELDS = ("command", "interval", "timeout", "retries", "startPeriod")
_PORT_FIELDS = ("containerPort", "hostPort", "protocol")


def parse_task_definition(doc: Any, source: str) -> TaskDefinition:
    """Validate an ECS-shaped task definition; raise :class:`TaskDefinitionError` naming every problem."""
    p = _Problems()
    obj = p.fields(doc, "", _TOP_FIELDS, _TOP_REQUIRED)
    if obj is None:
        raise TaskDefinitionError(source, p.items)

    family = p.string(obj, "family", "", _FAMILY, "1-255 letters, digits, '-' or '_'")
    revision = p.integer(obj, "revision", "", 1, 10**9, 0)
    role = _role(p, obj, "taskRoleArn")
    execution_role = _role(p, obj, "executionRoleArn")
    cpu = _units(p, obj, "cpu", _VCPU, 1024, 'CPU units, e.g. "256" or "1 vCPU"')
    memory = _units(p, obj, "memory", _GB, 1024, 'MiB, e.g. "512" or "2 GB"')
    network_mode = None
    if "networkMode" in obj:
        network_mode = obj["networkMode"]
        if network_mode not in NETWORK_MODES:
            p.add("networkMode", f"must be one of {', '.join(NETWORK_MODES)}")
            network_mode = None
    compat = p.string_list(obj, "requiresCompatibilities", "", non_empty=False) or ()
    if any(c not in COMPATIBILITIES for c in compat):
        p.add("requiresCompatibilities", f"each must be one of {', '.join(COMPATIBILITIES)}")

    containers = _containers(p, obj.get("containerDefinitions"), network_mode) if "containerDefinitions" in obj else ()
    _check_sizes(p, containers, cpu, memory)

    if "taskDefinitionArn" in obj and family and revision:
        arn = obj["taskDefinitionArn"]
        if (
            not isinstance(arn, str)
            or not arn.startswith("arn:")
            or not arn.endswith(f":task-definition/{family}:{revision}")
        ):
            p.add("taskDefinitionArn", f"must be the ARN of task-definition/{family}:{revision}")

    if p.items:
        raise TaskDefinitionError(source, p.items)
    assert family and role and cpu and memory
    return TaskDefinition(
        family=family,
        revision=revision or 0,
        task_role_arn=role,
        cpu=cpu,
        memory=memory,
        container_definitions=containers,
        network_mode=network_mode,
        requires_compatibilities=compat,
        execution_role_arn=execution_role,
    )


def _role(p: _Problems, obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if key in obj and not (isinstance(value, str) and (_ROLE_ARN.match(value) or _ROLE_NAME.match(value))):
        p.add(key, "must be an IAM role ARN or a role name")
        return None
    return value


def _units(p: _Problems, obj: dict[str, Any], key: str, unit: re.Pattern[str], scale: int, what: str) -> int | None:
    """Task-level cpu/memory: ECS takes strings ("1024", "1 vCPU", "2 GB"); an integer is accepted too."""
    if key not in obj:
        return None
    value = obj[key]
    number: int | None = None
    if _is_int(value):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    elif isinstance(value, str) and (m := unit.match(value.strip())):
        number = int(float(m.group(1)) * scale)
    if number is None or number < 1:
        p.add(key, f"must be a positive number of {what}")
        return None
    return number


def _containers(p: _Problems, value: Any, network_mode: str | None) -> tuple[ContainerDefinition, ...]:
    if not isinstance(value, list) or not value:
        p.add("containerDefinitions", "must be a non-empty list of container definitions")
        return ()
    containers: list[ContainerDefinition] = []
    names: set[str] = set()
    for i, item in enumerate(value):
        container = _container(p, item, f"containerDefinitions[{i}]", network_mode)
        if container is None:
            continue
        if container.name in names:
            p.add(f"containerDefinitions[{i}].name", f"duplicate container name {container.name!r}")
        names.add(container.name)
        containers.append(container)
    if len(containers) == len(value) and not any(c.essential for c in containers):
        p.add("containerDefinitions", "at least one container must be essential")
    return tuple(containers)


def _container(p: _Problems, item: Any, path: str, network_mode: str | None) -> ContainerDefinition | None:
    before = len(p.items)
    obj = p.fields(item, path, _CONTAINER_FIELDS, _CONTAINER_REQUIRED)
    if obj is None:
        return None
    name = p.string(obj, "name", path, _CONTAINER_NAME, "1-255 letters, digits, '-' or '_'")
    image = p.string(obj, "image", path)
    command = p.string_list(obj, "command", path, non_empty=True)
    essential = obj.get("essential", True)
    if not isinstance(essential, bool):
        p.add(f"{path}.essential", "must be true or false")
    stop_timeout = p.integer(obj, "stopTimeout", path, 2, 120, 30)
    cpu = p.integer(obj, "cpu", path, 0, 10 * 1024 * 1024, None)
    memory = p.integer(obj, "memory", path, 6, 10 * 1024 * 1024, None)
    ports = _port_mappings(p, obj.get("portMappings", []), f"{path}.portMappings", network_mode)
    container_ports = {m.container_port for m in ports}
    environment = _environment(p, obj.get("environment", []), f"{path}.environment", container_ports)
    health = (
        _health_check(p, obj["healthCheck"], f"{path}.healthCheck", container_ports) if "healthCheck" in obj else None
    )
    for j, arg in enumerate(command or ()):
        if _PLACEHOLDER.search(arg):
            p.add(
                f"{path}.command[{j}]", "port placeholders are substituted only in environment and healthCheck.command"
            )
    if len(p.items) > before:
        return None
    assert name and image and command
    return ContainerDefinition(
        name=name,
        image=image,
        command=command,
        environment=environment,
        port_mappings=ports,
        essential=essential,
        stop_timeout=stop_timeout or 30,
        health_check=health,
        cpu=cpu,
        memory=memory,
    )


def _port_mappings(p: _Problems, value: Any, path: str, network_mode: str | None) -> tuple[PortMapping, ...]:
    if not isinstance(value, list):
        p.add(path, "must be a list of port mappings")
        return ()
    mappings: list[PortMapping] = []
    seen: set[tuple[int, str]] = set()
    for i, item in enumerate(value):
        at = f"{path}[{i}]"
        obj = p.fields(item, at, _PORT_FIELDS, ("containerPort",))
        if obj is None or "containerPort" not in obj:
            continue
        container_port = p.integer(obj, "containerPort", at, 1, 65535, None)
        host_port = p.integer(obj, "hostPort", at, 0, 65535, None) or None  # 0 = dynamic, as in ECS
        protocol = obj.get("protocol", "tcp")
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
        p.add(path, "must be a list of {name, value}")
        return {}
    env: dict[str, str] = {}
    for i, item in enumerate(value):
        at = f"{path}[{i}]"
        obj = p.fields(item, at, ("name", "value"), ("name", "value"))
        if obj is None or "name" not in obj or "value" not in obj:
            continue
        name = p.string(obj, "name", at, _ENV_NAME, "an environment variable name")
        if not isinstance(obj["value"], str):
            p.add(f"{at}.value", "must be a string")
            continue
        _check_placeholders(p, obj["value"], f"{at}.value", container_ports)
        if name is None:
            continue
        if name in env:
            p.add(f"{at}.name", f"duplicate variable {name}")
        env[name] = obj["value"]
    return env


def _health_check(p: _Problems, value: Any, path: str, container_ports: set[int]) -> HealthCheck | None:
    obj = p.fields(value, path, _HEALTH_FIELDS, ("command",))
    if obj is None:
        return None
    command = p.string_list(obj, "command", path, non_empty=True)
    if command is not None:
        if command[0] == "CMD" and len(command) < 2:
            p.add(f"{path}.command", '["CMD", executable, args…] needs an executable')
        elif command[0] == "CMD-SHELL" and len(command) != 2:
            p.add(f"{path}.command", '["CMD-SHELL", "shell command"] takes exactly one string')
        elif command[0] not in ("CMD", "CMD-SHELL"):
            p.add(f"{path}.command[0]", 'must be "CMD" or "CMD-SHELL"')
        for j, arg in enumerate(command[1:], start=1):
            _check_placeholders(p, arg, f"{path}.command[{j}]", container_ports)
    interval = p.integer(obj, "interval", path, 5, 300, 30)
    timeout = p.integer(obj, "timeout", path, 2, 60, 5)
    retries = p.integer(obj, "retries", path, 1, 10, 3)
    start_period = p.integer(obj, "startPeriod", path, 0, 300, 0)
    if command is None:
        return None
    return HealthCheck(command, interval or 30, timeout or 5, retries or 3, start_period or 0)


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

    def register(
        self, doc_or_taskdef: Mapping[str, Any] | TaskDefinition, source: str = "<register>"
    ) -> TaskDefinition:
        """Register a definition (an ECS-shaped dict or a parsed one); return the revision that holds it."""
        taskdef = (
            doc_or_taskdef
            if isinstance(doc_or_taskdef, TaskDefinition)
            else parse_task_definition(doc_or_taskdef, source)
        )
        history = self._families.get(taskdef.family, [])
        if history and history[-1].status == ACTIVE and history[-1].taskdef.fingerprint == taskdef.fingerprint:
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
