"""The load balancer's description in ELBv2's request shapes, validated into frozen values.

Input is what a user would hand to the ELBv2 API: ``CreateTargetGroup`` bodies,
``CreateListener`` bodies and ``CreateRule`` bodies. botocore's own ``elbv2`` model
checks them first (unknown fields, types, required members, ``min``), then the
model's ``max`` and enums, which botocore's validator leaves out: what AWS refuses,
pixfleet refuses, with the same field paths. On top come the rules of this data
plane (HTTP only, ``forward`` to one target group, ``path-pattern`` conditions), each
with its own message. Every problem is gathered before :class:`LoadBalancerConfigError`
is raised.

One field is not in ``CreateTargetGroup``: ``TargetGroupAttributes``, a list of
``{"Key", "Value"}`` as CloudFormation's ``AWS::ElasticLoadBalancingV2::TargetGroup``
has it (the API sets them with ``ModifyTargetGroupAttributes``, whose ``Attributes``
shape validates them). Supported keys: ``deregistration_delay.timeout_seconds``,
``load_balancing.algorithm.type`` and ``slow_start.duration_seconds``.

References: a target group is named by its ``Name`` or by an ARN whose resource is
``targetgroup/<Name>/<id>`` (ELBv2's format carries the name). A listener is named
by the key it has in the ``listeners`` mapping (the ARN the control plane gave it);
each rule's ``ListenerArn`` must be one of those keys.

Path patterns follow ALB: case-sensitive, matched against the whole path (not the
query string), ``*`` any run of characters, ``?`` exactly one. They become anchored
regular expressions written without a backslash (``[.]`` rather than ``\\.``), so the
same text is valid in a map file and in a runtime-API payload.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

DEFAULTS = {  # ELBv2's defaults for an HTTP target group
    "HealthCheckPath": "/",
    "HealthCheckPort": "traffic-port",
    "HealthCheckIntervalSeconds": 30,
    "HealthCheckTimeoutSeconds": 5,
    "HealthyThresholdCount": 5,
    "UnhealthyThresholdCount": 2,
    "HttpCode": "200",
}
ATTRIBUTE_DEFAULTS = {
    "deregistration_delay.timeout_seconds": "300",
    "load_balancing.algorithm.type": "round_robin",
    "slow_start.duration_seconds": "0",
}
ALGORITHMS = {"round_robin": "roundrobin", "least_outstanding_requests": "leastconn"}
# Fields this data plane understands; anything else the model allows is refused by name.
TARGET_GROUP_FIELDS = {
    "Name",
    "Protocol",
    "ProtocolVersion",
    "Port",
    "VpcId",
    "HealthCheckProtocol",
    "HealthCheckPort",
    "HealthCheckEnabled",
    "HealthCheckPath",
    "HealthCheckIntervalSeconds",
    "HealthCheckTimeoutSeconds",
    "HealthyThresholdCount",
    "UnhealthyThresholdCount",
    "Matcher",
    "TargetType",
    "Tags",
    "IpAddressType",
}
LISTENER_FIELDS = {"LoadBalancerArn", "Protocol", "Port", "DefaultActions", "Tags"}
RULE_FIELDS = {"ListenerArn", "Conditions", "Priority", "Actions", "Tags"}

_TG_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?$")
_TG_ARN = re.compile(r"^arn:aws[a-z-]*:elasticloadbalancing:[^:]*:[0-9]*:targetgroup/([^/]+)/[^/]+$")
_PATH_PATTERN = re.compile(r"^[A-Za-z0-9_\-.$/~\"'@:+&*?]{1,128}$")
_CHECK_PATH = re.compile(r'^/[^\s"\\]{0,1023}$')
_HTTP_CODE = re.compile(r"^[1-5][0-9]{2}$")


class LoadBalancerConfigError(ValueError):
    """The description is invalid; ``problems`` lists every reason (ELBv2's ``ValidationError``)."""

    code = "ValidationError"

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class HealthCheck:
    """How HAProxy checks a target: ``GET path`` every ``interval`` seconds."""

    enabled: bool
    path: str
    port: int | None  # None: the traffic port
    interval: int
    timeout: int
    healthy_threshold: int
    unhealthy_threshold: int
    codes: tuple[int, ...]


@dataclass(frozen=True)
class TargetGroup:
    name: str
    port: int
    health: HealthCheck
    deregistration_delay: int
    algorithm: str  # ELBv2's name: round_robin | least_outstanding_requests
    slow_start: int


@dataclass(frozen=True)
class Rule:
    priority: int
    path_patterns: tuple[str, ...]
    target_group: str

    @property
    def regexes(self) -> tuple[str, ...]:
        return tuple(path_pattern_regex(p) for p in self.path_patterns)


@dataclass(frozen=True)
class Listener:
    ref: str
    port: int
    default_target_group: str
    rules: tuple[Rule, ...]  # ascending priority: the order HAProxy evaluates them in


@dataclass(frozen=True)
class LoadBalancerSpec:
    target_groups: tuple[TargetGroup, ...]
    listeners: tuple[Listener, ...]

    @classmethod
    def from_requests(
        cls,
        target_groups: Iterable[Mapping[str, Any]],
        listeners: Mapping[str, Mapping[str, Any]],
        rules: Iterable[Mapping[str, Any]] = (),
    ) -> LoadBalancerSpec:
        """Validate ELBv2 request bodies; raise :class:`LoadBalancerConfigError` with every problem."""
        problems: list[str] = []
        groups: list[TargetGroup] = []
        target_groups = list(target_groups)
        for i, body in enumerate(target_groups):
            group = _target_group(body, f"CreateTargetGroup[{body.get('Name', i)}]", problems)
            if group is not None:
                if any(g.name == group.name for g in groups):
                    problems.append(f"DuplicateTargetGroupName: a target group named {group.name!r} exists already")
                groups.append(group)
        # Every named group, valid or not: one bad group is one problem, not one per reference too.
        names = {body["Name"] for body in target_groups if isinstance(body.get("Name"), str)}
        rules_by_listener: dict[str, list[Mapping[str, Any]]] = {ref: [] for ref in listeners}
        for i, body in enumerate(rules):
            ref = body.get("ListenerArn")
            if isinstance(ref, str) and ref not in listeners:
                problems.append(f"CreateRule[{i}].ListenerArn: ListenerNotFound: no listener {ref!r}")
            elif isinstance(ref, str):
                rules_by_listener[ref].append(body)
            else:
                _model_problems("CreateRule", body, f"CreateRule[{i}]", problems)
        built: list[Listener] = []
        for ref, body in listeners.items():
            listener = _listener(ref, body, names, problems)
            parsed = parse_rules(rules_by_listener[ref], names, f"CreateRule[{ref}]", problems)
            if listener is not None:
                built.append(Listener(ref, listener.port, listener.default_target_group, parsed))
        ports = [lst.port for lst in built]
        for port in sorted({p for p in ports if ports.count(p) > 1}):
            problems.append(f"DuplicateListener: two listeners on port {port}")
        if not built and not problems:
            problems.append("a load balancer needs at least one listener")
        if problems:
            raise LoadBalancerConfigError(problems)
        return cls(tuple(groups), tuple(built))

    @classmethod
    def from_description(cls, doc: Mapping[str, Any], source: str = "the description") -> LoadBalancerSpec:
        """``{"targetGroups": [CreateTargetGroup…], "listeners": {arn: CreateListener}, "rules": [CreateRule…]}``."""
        if not isinstance(doc, Mapping):
            raise LoadBalancerConfigError([f"{source}: must be a JSON object"])
        unknown = sorted(set(doc) - {"targetGroups", "listeners", "rules"})
        shapes: list[tuple[str, type, str]] = [("targetGroups", list, "list"), ("listeners", dict, "object")]
        shapes.append(("rules", list, "list"))
        problems = [f"{source}.{key}: unknown field (targetGroups, listeners, rules)" for key in unknown]
        problems += [f"{source}.{k}: must be a {n}" for k, t, n in shapes if k in doc and not isinstance(doc[k], t)]
        if problems:
            raise LoadBalancerConfigError(problems)
        try:
            return cls.from_requests(doc.get("targetGroups", []), doc.get("listeners", {}), doc.get("rules", []))
        except LoadBalancerConfigError as exc:
            raise LoadBalancerConfigError([f"{source}: {p}" for p in exc.problems]) from None

    @classmethod
    def load(cls, path: Path) -> LoadBalancerSpec:
        """Read and validate a description file (``infra/ecs/loadbalancing.json``)."""
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise LoadBalancerConfigError([f"{path}: {exc}"]) from None
        return cls.from_description(doc, str(path))

    def target_group(self, ref: str) -> TargetGroup:
        """The target group named by ``ref`` (a name or a target group ARN)."""
        name = target_group_name(ref)
        for group in self.target_groups:
            if group.name == name:
                return group
        raise TargetGroupNotFoundError(f"TargetGroupNotFound: no target group {ref!r}")

    def listener(self, ref: str | None = None) -> Listener:
        """The listener with key ``ref``; without one, the only listener."""
        if ref is None and len(self.listeners) == 1:
            return self.listeners[0]
        for listener in self.listeners:
            if listener.ref == ref or (ref is not None and ref.isdigit() and listener.port == int(ref)):
                return listener
        raise ListenerNotFoundError(f"ListenerNotFound: no listener {ref!r}")


class TargetGroupNotFoundError(LookupError):
    code = "TargetGroupNotFound"


class ListenerNotFoundError(LookupError):
    code = "ListenerNotFound"


def target_group_name(ref: str) -> str:
    """``api`` → ``api``; ``arn:…:targetgroup/api/0123abcd`` → ``api``."""
    match = _TG_ARN.match(ref)
    return match.group(1) if match else ref


def path_pattern_regex(pattern: str) -> str:
    """An ALB path pattern as an anchored regex with no backslash (``/v2/*`` → ``^/v2/.*$``)."""
    if not _PATH_PATTERN.match(pattern):
        raise ValueError(
            f"path pattern {pattern!r}: up to 128 of A-Z a-z 0-9 _ - . $ / ~ \" ' @ : + & and the wildcards * ?"
        )
    out = []
    for char in pattern:
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char in ".$+":
            out.append(f"[{char}]")
        else:
            out.append(char)
    return "^" + "".join(out) + "$"


def parse_rules(
    bodies: Iterable[Mapping[str, Any]], target_groups: set[str], where: str, problems: list[str]
) -> tuple[Rule, ...]:
    """``CreateRule`` bodies of one listener → rules in ascending priority (problems appended)."""
    rules: list[Rule] = []
    for i, body in enumerate(bodies):
        path = f"{where}[{body.get('Priority', i)}]"
        if not _model_problems("CreateRule", body, path, problems):
            continue
        _unsupported(body, RULE_FIELDS, path, problems)
        patterns: list[str] = []
        for j, condition in enumerate(body["Conditions"]):
            field_name = condition.get("Field")
            if field_name != "path-pattern":
                problems.append(
                    f"{path}.Conditions[{j}].Field: {field_name!r} is not supported (only path-pattern conditions)"
                )
                continue
            values = list(condition.get("Values") or []) + list(
                (condition.get("PathPatternConfig") or {}).get("Values") or []
            )
            if condition.get("RegexValues"):
                problems.append(f"{path}.Conditions[{j}].RegexValues: not supported (use Values with * and ?)")
            if not values:
                problems.append(f"{path}.Conditions[{j}]: a path-pattern condition needs Values")
            for value in values:
                try:
                    path_pattern_regex(value)
                except ValueError as exc:
                    problems.append(f"{path}.Conditions[{j}]: {exc}")
                else:
                    patterns.append(value)
        target = _forward_target(body["Actions"], target_groups, f"{path}.Actions", problems)
        if patterns and target is not None:
            rules.append(Rule(int(body["Priority"]), tuple(patterns), target))
    priorities = [r.priority for r in rules]
    for priority in sorted({p for p in priorities if priorities.count(p) > 1}):
        problems.append(f"{where}: PriorityInUse: two rules have priority {priority}")
    return tuple(sorted(rules, key=lambda r: r.priority))


# --- the pieces --------------------------------------------------------------------------------------


def _target_group(body: Mapping[str, Any], path: str, problems: list[str]) -> TargetGroup | None:
    request = {k: v for k, v in body.items() if k != "TargetGroupAttributes"}
    ok = _model_problems("CreateTargetGroup", request, path, problems)
    attributes = _attributes(body.get("TargetGroupAttributes", []), path, problems)
    if not ok or attributes is None:
        return None
    before = len(problems)
    _unsupported(request, TARGET_GROUP_FIELDS, path, problems)
    name = request["Name"]
    if not _TG_NAME.match(name):
        problems.append(f"{path}.Name: up to 32 letters, digits and hyphens, not starting or ending with a hyphen")
    for key, allowed in (
        ("Protocol", {"HTTP"}),
        ("HealthCheckProtocol", {"HTTP"}),
        ("ProtocolVersion", {"HTTP1"}),
        ("TargetType", {"instance", "ip"}),
        ("IpAddressType", {"ipv4"}),
    ):
        if key in request and request[key] not in allowed:
            problems.append(
                f"{path}.{key}: {request[key]!r} is not supported (supported: {', '.join(sorted(allowed))})"
            )
    for key in ("Protocol", "Port"):
        if key not in request:
            problems.append(f"{path}.{key}: required for a target group of instances or IPs")
    values = {**DEFAULTS, **request}
    interval, timeout = values["HealthCheckIntervalSeconds"], values["HealthCheckTimeoutSeconds"]
    if timeout >= interval:
        problems.append(
            f"{path}: HealthCheckTimeoutSeconds ({timeout}) must be smaller than"
            f" HealthCheckIntervalSeconds ({interval})"
        )
    check_port: int | None = None
    if values["HealthCheckPort"] != "traffic-port":
        if str(values["HealthCheckPort"]).isdigit() and 1 <= int(values["HealthCheckPort"]) <= 65535:
            check_port = int(values["HealthCheckPort"])
        else:
            problems.append(f"{path}.HealthCheckPort: 'traffic-port' or a port number 1-65535")
    if not _CHECK_PATH.match(str(values["HealthCheckPath"])):
        problems.append(f"{path}.HealthCheckPath: a path starting with /, without spaces, quotes or backslashes")
    codes = _http_codes((request.get("Matcher") or {}).get("HttpCode", DEFAULTS["HttpCode"]), path, problems)
    if (request.get("Matcher") or {}).get("GrpcCode"):
        problems.append(f"{path}.Matcher.GrpcCode: not supported (HTTP target groups only)")
    algorithm = attributes["load_balancing.algorithm.type"]
    if algorithm not in ALGORITHMS:
        problems.append(
            f"{path}.TargetGroupAttributes: load_balancing.algorithm.type {algorithm!r} is not supported"
            f" (supported: {', '.join(ALGORITHMS)})"
        )
    numbers: dict[str, int] = {}
    for key, low, high in (("deregistration_delay.timeout_seconds", 0, 3600), ("slow_start.duration_seconds", 0, 900)):
        text = attributes[key]
        if text.isdigit() and low <= int(text) <= high:
            numbers[key] = int(text)
        else:
            problems.append(f"{path}.TargetGroupAttributes: {key} must be a whole number of seconds {low}-{high}")
    if 0 < numbers.get("slow_start.duration_seconds", 0) < 30:
        problems.append(f"{path}.TargetGroupAttributes: slow_start.duration_seconds is 0 (off) or 30-900")
    if len(problems) > before:
        return None
    health = HealthCheck(
        enabled=bool(values.get("HealthCheckEnabled", True)),
        path=values["HealthCheckPath"],
        port=check_port,
        interval=interval,
        timeout=timeout,
        healthy_threshold=values["HealthyThresholdCount"],
        unhealthy_threshold=values["UnhealthyThresholdCount"],
        codes=codes,
    )
    return TargetGroup(
        name=name,
        port=request["Port"],
        health=health,
        deregistration_delay=numbers["deregistration_delay.timeout_seconds"],
        algorithm=algorithm,
        slow_start=numbers["slow_start.duration_seconds"],
    )


def _attributes(attributes: Any, path: str, problems: list[str]) -> dict[str, str] | None:
    before = len(problems)
    request = {"TargetGroupArn": "-", "Attributes": attributes}
    _model_problems("ModifyTargetGroupAttributes", request, path, problems)
    for i, line in enumerate(problems[before:], start=before):
        problems[i] = line.replace(".Attributes", ".TargetGroupAttributes")
    if len(problems) > before:
        return None
    values = dict(ATTRIBUTE_DEFAULTS)
    for i, attribute in enumerate(attributes):
        key = attribute.get("Key")
        if key is None:
            problems.append(f"{path}.TargetGroupAttributes[{i}].Key: required")
        elif key not in ATTRIBUTE_DEFAULTS:
            problems.append(
                f"{path}.TargetGroupAttributes: {key!r} is not supported (supported: {', '.join(ATTRIBUTE_DEFAULTS)})"
            )
        else:
            values[key] = str(attribute.get("Value", ""))
    return None if len(problems) > before else values


def _listener(ref: str, body: Mapping[str, Any], target_groups: set[str], problems: list[str]) -> Listener | None:
    path = f"CreateListener[{ref}]"
    if not _model_problems("CreateListener", body, path, problems):
        return None
    before = len(problems)
    _unsupported(body, LISTENER_FIELDS, path, problems)
    if body.get("Protocol", "HTTP") != "HTTP":
        problems.append(f"{path}.Protocol: {body['Protocol']!r} is not supported (supported: HTTP)")
    if "Port" not in body:
        problems.append(f"{path}.Port: required")
    target = _forward_target(body["DefaultActions"], target_groups, f"{path}.DefaultActions", problems)
    if len(problems) > before or target is None:
        return None
    return Listener(ref, body["Port"], target, ())


def _forward_target(actions: list[Any], target_groups: set[str], path: str, problems: list[str]) -> str | None:
    if len(actions) != 1 or actions[0].get("Type") != "forward":
        problems.append(f"{path}: exactly one action of Type 'forward' is supported")
        return None
    action = actions[0]
    refs = [action["TargetGroupArn"]] if action.get("TargetGroupArn") else []
    refs += [tg.get("TargetGroupArn") for tg in (action.get("ForwardConfig") or {}).get("TargetGroups", [])]
    names = {target_group_name(r) for r in refs if r}
    if len(names) != 1:
        problems.append(f"{path}[0]: forward to exactly one target group (weighted forwarding is not supported)")
        return None
    name = names.pop()
    if name not in target_groups:
        problems.append(f"{path}[0].TargetGroupArn: TargetGroupNotFound: no target group {name!r}")
        return None
    return name


def _http_codes(text: str, path: str, problems: list[str]) -> tuple[int, ...]:
    """ELBv2's matcher syntax: ``200``, ``200,202``, ``200-299``."""
    codes: list[int] = []
    for part in str(text).split(","):
        low, _, high = part.strip().partition("-")
        if not _HTTP_CODE.match(low) or (high and not _HTTP_CODE.match(high)) or (high and int(high) < int(low)):
            problems.append(f"{path}.Matcher.HttpCode: {text!r} is not a code, a list (200,202) or a range (200-299)")
            return ()
        codes.extend(range(int(low), int(high or low) + 1))
    return tuple(sorted(set(codes)))


def _unsupported(body: Mapping[str, Any], supported: set[str], path: str, problems: list[str]) -> None:
    for key in sorted(set(body) - supported):
        problems.append(f"{path}.{key}: not supported by pixfleet's load balancer")


# --- botocore's model ---------------------------------------------------------------------------------


@cache
def _model() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("elbv2")


def _model_problems(operation: str, params: Mapping[str, Any], path: str, problems: list[str]) -> bool:
    """Validate ``params`` as ``operation``'s input with botocore's model; append problems, True if none."""
    from botocore.validate import ParamValidator

    shape = _model().operation_model(operation).input_shape
    report = ParamValidator().validate(dict(params), shape)
    found = []
    if report.has_errors():
        found = [f"{path}: {line.strip()}" for line in report.generate_report().splitlines() if line.strip()]
    else:
        _limits(params, shape, "", found)
        found = [f"{path}.{line}" for line in found]
    problems.extend(found)
    return not found


def _limits(value: Any, shape: Any, where: str, found: list[str]) -> None:
    """The model's ``max`` and enums, which botocore's ParamValidator does not check."""
    kind, meta = shape.type_name, shape.metadata
    label = where
    if kind == "structure" and isinstance(value, Mapping):
        for key, member in shape.members.items():
            if key in value:
                _limits(value[key], member, f"{where}.{key}" if where else key, found)
    elif kind == "list" and isinstance(value, list):
        if "max" in meta and len(value) > meta["max"]:
            found.append(f"{label}: at most {meta['max']} items")
        for i, item in enumerate(value):
            _limits(item, shape.member, f"{where}[{i}]", found)
    elif kind in ("integer", "long") and isinstance(value, int):
        if "max" in meta and value > meta["max"]:
            found.append(f"{label}: {value} is above the maximum {meta['max']}")
    elif kind == "string" and isinstance(value, str):
        if "max" in meta and len(value) > meta["max"]:
            found.append(f"{label}: longer than {meta['max']} characters")
        if shape.enum and value not in shape.enum:
            found.append(f"{label}: {value!r} is not one of {', '.join(shape.enum)}")
