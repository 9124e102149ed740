"""Task definitions: ECS-shaped parsing and validation, revisions in the registry, port placeholders."""

from __future__ import annotations

import copy
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.net import free_port
from services.orchestrator.taskdefs import (
    INACTIVE,
    SHIPPED_DIR,
    HealthCheck,
    PlaceholderError,
    PortMapping,
    TaskDefinitionError,
    TaskDefinitionRegistry,
    UnknownRole,
    UnknownTaskDefinition,
    parse_task_definition,
    render_placeholders,
    resolve_role_arn,
)

REPO = Path(__file__).resolve().parents[1]
SOURCE = "infra/taskdefs/test.json"

CONTAINER: dict[str, Any] = {
    "name": "worker",
    "image": "pixfleet-worker:latest",
    "command": ["python", "-m", "services.worker"],
    "environment": [{"name": "PIXFLEET_WORKER_HEALTH_PORT", "value": "${PORT_8081}"}],
    "portMappings": [{"containerPort": 8081}],
    "stopTimeout": 30,
    "healthCheck": {"command": ["CMD", "python", "-m", "services.worker", "--healthcheck"]},
}
DOC: dict[str, Any] = {
    "family": "pixfleet-worker",
    "taskRoleArn": "pixfleet-worker",
    "cpu": "1024",
    "memory": "1024",
    "containerDefinitions": [CONTAINER],
}


def doc(drop: tuple[str, ...] = (), **top: Any) -> dict[str, Any]:
    """A valid worker definition with top-level fields replaced or dropped."""
    d = copy.deepcopy(DOC)
    d.update(top)
    for key in drop:
        d.pop(key)
    return d


def with_container(drop: tuple[str, ...] = (), **fields: Any) -> dict[str, Any]:
    """A valid worker definition whose container has fields replaced or dropped."""
    c = copy.deepcopy(CONTAINER)
    c.update(fields)
    for key in drop:
        c.pop(key)
    return doc(containerDefinitions=[c])


C0 = "containerDefinitions[0]"

# (case, document, is_error, the exact problems reported)
PARSE_CASES: list[tuple[str, Any, bool, list[str]]] = [
    ("valid", doc(), False, []),
    (
        "ecs optional fields",
        doc(
            networkMode="bridge",
            requiresCompatibilities=["EC2"],
            executionRoleArn="arn:aws:iam::123456789012:role/exec",
        ),
        False,
        [],
    ),
    ("vCPU and GB units", doc(cpu="1 vCPU", memory="2 GB"), False, []),
    ("full role ARN", doc(taskRoleArn="arn:aws:iam::123456789012:role/pixfleet-worker"), False, []),
    ("not an object", ["family"], True, ["must be a JSON object"]),
    (
        "missing required",
        doc(drop=("family", "taskRoleArn", "cpu", "memory", "containerDefinitions")),
        True,
        [
            "family: required",
            "taskRoleArn: required",
            "cpu: required",
            "memory: required",
            "containerDefinitions: required",
        ],
    ),
    ("unknown top-level field", doc(volumes=[]), True, ["volumes: unknown field"]),
    ("bad family", doc(family="pix fleet"), True, ["family: must be 1-255 letters, digits, '-' or '_'"]),
    ("bad role", doc(taskRoleArn="arn:aws:s3:::bucket"), True, ["taskRoleArn: must be an IAM role ARN or a role name"]),
    (
        "bad cpu and memory",
        doc(cpu="lots", memory=0),
        True,
        [
            'cpu: must be a positive number of CPU units, e.g. "256" or "1 vCPU"',
            'memory: must be a positive number of MiB, e.g. "512" or "2 GB"',
        ],
    ),
    ("bad network mode", doc(networkMode="overlay"), True, ["networkMode: must be one of bridge, host, awsvpc, none"]),
    (
        "bad compatibilities",
        doc(requiresCompatibilities=["LAMBDA"]),
        True,
        ["requiresCompatibilities: each must be one of EC2, FARGATE, EXTERNAL"],
    ),
    (
        "no containers",
        doc(containerDefinitions=[]),
        True,
        ["containerDefinitions: must be a non-empty list of container definitions"],
    ),
    (
        "no essential container",
        with_container(essential=False),
        True,
        ["containerDefinitions: at least one container must be essential"],
    ),
    (
        "stop timeout and unknown field at once",
        with_container(stopTimeout=600, foo=1),
        True,
        [f"{C0}.foo: unknown field", f"{C0}.stopTimeout: must be an integer in 2..120"],
    ),
    (
        "stop timeout is not a string",
        with_container(stopTimeout="30"),
        True,
        [f"{C0}.stopTimeout: must be an integer in 2..120"],
    ),
    (
        "missing container fields",
        with_container(drop=("name", "image", "command")),
        True,
        [f"{C0}.name: required", f"{C0}.image: required", f"{C0}.command: required"],
    ),
    ("empty command", with_container(command=[]), True, [f"{C0}.command: must be a non-empty list of strings"]),
    ("essential not a bool", with_container(essential="yes"), True, [f"{C0}.essential: must be true or false"]),
    (
        "environment entries",
        with_container(environment=[{"name": "A", "value": 1}, {"name": "1B", "value": "x"}, {"name": "C"}]),
        True,
        [
            f"{C0}.environment[0].value: must be a string",
            f"{C0}.environment[1].name: must be an environment variable name",
            f"{C0}.environment[2].value: required",
        ],
    ),
    (
        "duplicate variable",
        with_container(environment=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
        True,
        [f"{C0}.environment[1].name: duplicate variable A"],
    ),
    (
        "port mappings",
        with_container(
            environment=[],
            portMappings=[{"containerPort": 0}, {"containerPort": 80, "protocol": "sctp"}, {"hostPort": 1}],
        ),
        True,
        [
            f"{C0}.portMappings[0].containerPort: must be an integer in 1..65535",
            f"{C0}.portMappings[1].protocol: must be one of tcp, udp",
            f"{C0}.portMappings[2].containerPort: required",
        ],
    ),
    (
        "port mapped twice",
        with_container(portMappings=[{"containerPort": 8081}, {"containerPort": 8081, "hostPort": 9000}]),
        True,
        [f"{C0}.portMappings[1].containerPort: 8081/tcp is mapped twice"],
    ),
    (
        "host mode needs hostPort = containerPort",
        doc(
            networkMode="host",
            containerDefinitions=[{**CONTAINER, "portMappings": [{"containerPort": 8081, "hostPort": 9000}]}],
        ),
        True,
        [f"{C0}.portMappings[0].hostPort: must equal containerPort in host network mode"],
    ),
    (
        "health check ranges",
        with_container(
            healthCheck={"command": ["CMD", "true"], "interval": 1, "timeout": 61, "retries": 0, "startPeriod": 301}
        ),
        True,
        [
            f"{C0}.healthCheck.interval: must be an integer in 5..300",
            f"{C0}.healthCheck.timeout: must be an integer in 2..60",
            f"{C0}.healthCheck.retries: must be an integer in 1..10",
            f"{C0}.healthCheck.startPeriod: must be an integer in 0..300",
        ],
    ),
    (
        "health check command form",
        with_container(healthCheck={"command": ["curl", "localhost"]}),
        True,
        [f'{C0}.healthCheck.command[0]: must be "CMD" or "CMD-SHELL"'],
    ),
    (
        "CMD-SHELL takes one string",
        with_container(healthCheck={"command": ["CMD-SHELL", "curl", "x"]}),
        True,
        [f'{C0}.healthCheck.command: ["CMD-SHELL", "shell command"] takes exactly one string'],
    ),
    (
        "health check unknown field",
        with_container(healthCheck={"command": ["CMD", "true"], "every": 5}),
        True,
        [f"{C0}.healthCheck.every: unknown field"],
    ),
    (
        "unknown placeholder port",
        with_container(environment=[{"name": "P", "value": "${PORT_9999}"}]),
        True,
        [f"{C0}.environment[0].value: ${{PORT_9999}} names no containerPort of this container's portMappings (8081)"],
    ),
    (
        "malformed placeholder in health check",
        with_container(healthCheck={"command": ["CMD-SHELL", "curl localhost:${PORT_x}"]}),
        True,
        [f"{C0}.healthCheck.command[1]: ${{PORT_x}} names no containerPort of this container's portMappings (8081)"],
    ),
    (
        "placeholder in command",
        with_container(command=["serve", "--port", "${PORT_8081}"]),
        True,
        [f"{C0}.command[2]: port placeholders are substituted only in environment and healthCheck.command"],
    ),
    (
        "container reservations over the task's",
        with_container(cpu=2048, memory=4096),
        True,
        [
            "containerDefinitions: containers reserve 2048 CPU units, more than the task's 1024",
            "containerDefinitions: containers reserve 4096 MiB, more than the task's 1024",
        ],
    ),
    (
        "duplicate container names",
        doc(containerDefinitions=[CONTAINER, CONTAINER]),
        True,
        ["containerDefinitions[1].name: duplicate container name 'worker'"],
    ),
    (
        "second container bad, first fine",
        doc(containerDefinitions=[CONTAINER, {"name": "sidecar", "image": "x", "command": ["x"], "stopTimeout": 1}]),
        True,
        ["containerDefinitions[1].stopTimeout: must be an integer in 2..120"],
    ),
    (
        "revision and ARN from to_ecs_json",
        doc(revision=3, taskDefinitionArn="arn:aws:ecs:us-east-1:123456789012:task-definition/pixfleet-worker:3"),
        False,
        [],
    ),
    (
        "ARN of another revision",
        doc(revision=3, taskDefinitionArn="arn:aws:ecs:us-east-1:123456789012:task-definition/pixfleet-worker:2"),
        True,
        ["taskDefinitionArn: must be the ARN of task-definition/pixfleet-worker:3"],
    ),
]


@pytest.mark.parametrize(("case", "document", "is_error", "problems"), PARSE_CASES, ids=[c[0] for c in PARSE_CASES])
def test_parse_reports_every_problem_with_file_and_path(
    case: str, document: Any, is_error: bool, problems: list[str]
) -> None:
    if not is_error:
        parse_task_definition(document, SOURCE)
        return
    with pytest.raises(TaskDefinitionError) as info:
        parse_task_definition(document, SOURCE)
    assert info.value.problems == problems
    assert str(info.value) == f"{SOURCE}: " + "; ".join(problems)


def test_defaults_are_filled_in() -> None:
    td = parse_task_definition(
        with_container(drop=("stopTimeout",), healthCheck={"command": ["CMD-SHELL", "exit 0"]}), SOURCE
    )
    c = td.main_container
    assert (c.essential, c.stop_timeout, c.cpu, c.memory) == (True, 30, None, None)
    assert c.health_check == HealthCheck(("CMD-SHELL", "exit 0"), interval=30, timeout=5, retries=3, start_period=0)
    assert c.port_mappings == (PortMapping(8081, None, "tcp"),)
    assert (td.revision, td.cpu, td.memory) == (0, 1024, 1024)
    assert parse_task_definition(doc(cpu="0.5 vCPU", memory="2 GB"), SOURCE).cpu == 512


def test_main_container_is_the_first_essential() -> None:
    sidecar = {"name": "sidecar", "image": "x", "command": ["x"], "essential": False}
    td = parse_task_definition(doc(containerDefinitions=[sidecar, CONTAINER]), SOURCE)
    assert td.main_container.name == "worker"


def test_shipped_task_definitions() -> None:
    api, deadletter, worker = TaskDefinitionRegistry().load_dir(SHIPPED_DIR)

    assert (api.key, api.task_role_arn) == ("pixfleet-api:1", "pixfleet-api")
    a = api.main_container
    assert (a.image, a.command, a.stop_timeout) == ("pixfleet-api:latest", ("python", "-m", "services.api"), 10)
    assert a.resolved({}).environment == {
        "PIXFLEET_API_HOST": "0.0.0.0",
        "PIXFLEET_API_PORT": "8080",
    }  # fixed hostPort; containers bind all interfaces (`pixfleet up` overrides to 127.0.0.1)
    assert a.port_mappings == (PortMapping(8080, 8080, "tcp"),)
    assert a.health_check == HealthCheck(("CMD", "python", "-m", "services.api", "--healthcheck"), 5, 3, 3, 5)

    assert (worker.key, worker.task_role_arn, worker.cpu, worker.memory) == (
        "pixfleet-worker:1",
        "pixfleet-worker",
        1024,
        1024,
    )
    w = worker.main_container
    assert (w.image, w.command, w.stop_timeout) == ("pixfleet-worker:latest", ("python", "-m", "services.worker"), 30)
    assert w.port_mappings == (PortMapping(8081, None, "tcp"),)
    assert w.health_check == HealthCheck(("CMD", "python", "-m", "services.worker", "--healthcheck"), 5, 3, 3, 5)
    assert w.resolved({8081: 41234}).environment == {
        "PIXFLEET_WORKER_HEALTH_PORT": "41234",
        "PIXFLEET_WORKER_PROCESSES": "1",
        "PIXFLEET_WORKER_CONCURRENCY": "2",
        "PIXFLEET_WORKER_WAIT_TIME": "10",
        "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456",
    }  # no visibility timeout or receive count: the worker reads them from the queue (one source: the stack)

    assert (deadletter.key, deadletter.task_role_arn, deadletter.cpu, deadletter.memory) == (
        "pixfleet-deadletter:1",
        "pixfleet-deadletter",
        256,
        512,
    )
    d = deadletter.main_container
    assert (d.image, d.command) == ("pixfleet-worker:latest", ("python", "-m", "services.deadletter"))
    assert d.resolved({8082: 41235}).environment == {"PIXFLEET_DEADLETTER_HEALTH_PORT": "41235"}


@pytest.mark.parametrize("file", sorted(SHIPPED_DIR.glob("*.json")), ids=lambda p: p.name)
def test_round_trip_through_ecs_json(file: Path) -> None:
    td = parse_task_definition(json.loads(file.read_text()), str(file)).with_revision(7)
    ecs = td.to_ecs_json(region="eu-west-1", account_id="123456789012")
    assert ecs["revision"] == 7
    assert ecs["taskDefinitionArn"] == f"arn:aws:ecs:eu-west-1:123456789012:task-definition/{td.family}:7"
    assert parse_task_definition(json.loads(json.dumps(ecs)), "round-trip") == td
    assert parse_task_definition(td.to_ecs_json(), "round-trip") == td  # without the ARN too


def test_round_trip_keeps_optional_fields() -> None:
    sidecar = {"name": "log", "image": "x", "command": ["x"], "essential": False, "cpu": 128, "memory": 64}
    td = parse_task_definition(
        doc(
            networkMode="bridge",
            requiresCompatibilities=["EC2", "FARGATE"],
            executionRoleArn="exec",
            containerDefinitions=[CONTAINER, sidecar],
        ),
        SOURCE,
    )
    assert parse_task_definition(td.to_ecs_json(), "round-trip") == td


def test_fingerprint_ignores_revision_and_environment_order() -> None:
    env = [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    one = parse_task_definition(with_container(environment=env), SOURCE)
    two = parse_task_definition(with_container(environment=env[::-1]), SOURCE)
    assert one.fingerprint == two.fingerprint == one.with_revision(5).fingerprint
    assert (
        one.fingerprint == parse_task_definition(with_container(environment=env, essential=True), SOURCE).fingerprint
    )  # defaults
    assert one.fingerprint != parse_task_definition(with_container(environment=env[:1]), SOURCE).fingerprint


# --- registry --------------------------------------------------------------------------------------


def test_registry_revisions(tmp_path: Path) -> None:
    registry = TaskDefinitionRegistry(tmp_path / "taskdefs.json")
    first = registry.register(doc(), "a.json")
    assert first.key == "pixfleet-worker:1"
    assert registry.register(doc(), "a.json") == first  # identical content: idempotent
    second = registry.register(with_container(stopTimeout=60), "a.json")
    assert second.key == "pixfleet-worker:2"
    assert registry.register(second) == second  # a parsed definition registers the same way
    assert registry.get("pixfleet-worker") == second
    assert registry.get("pixfleet-worker:1") == first
    assert registry.get("arn:aws:ecs:us-east-1:123456789012:task-definition/pixfleet-worker:1") == first
    assert registry.revisions("pixfleet-worker") == [first, second]
    assert registry.families() == ["pixfleet-worker"]

    assert registry.deregister("pixfleet-worker:2") == second
    assert registry.status("pixfleet-worker:2") == INACTIVE
    assert registry.get("pixfleet-worker") == first  # latest ACTIVE
    assert registry.get("pixfleet-worker:2") == second  # still describable
    with pytest.raises(UnknownTaskDefinition, match=r"pixfleet-worker:2 is INACTIVE"):
        registry.get("pixfleet-worker:2", active_only=True)
    # a deregistered revision is never revived: the same content gets a new number
    assert registry.register(with_container(stopTimeout=60)).key == "pixfleet-worker:3"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (
            "pixfleet-worker:9",
            "unknown task definition pixfleet-worker:9 (revisions: pixfleet-worker:1 INACTIVE, pixfleet-worker:2)",
        ),
        ("nope", "unknown task definition family 'nope' (known: pixfleet-worker)"),
        ("pixfleet-worker:x", "bad task definition reference 'pixfleet-worker:x' (expected family or family:revision)"),
    ],
)
def test_unknown_references_list_what_exists(ref: str, message: str) -> None:
    registry = TaskDefinitionRegistry()
    registry.register(doc())
    registry.register(with_container(stopTimeout=60))
    registry.deregister("pixfleet-worker:1")
    with pytest.raises(KeyError) as info:
        registry.get(ref)
    assert isinstance(info.value, UnknownTaskDefinition)
    assert str(info.value) == message


def test_no_active_revision_and_deregister_needs_a_revision() -> None:
    registry = TaskDefinitionRegistry()
    registry.register(doc())
    with pytest.raises(UnknownTaskDefinition, match="needs family:revision"):
        registry.deregister("pixfleet-worker")
    registry.deregister("pixfleet-worker:1")
    registry.deregister("pixfleet-worker:1")  # idempotent
    with pytest.raises(
        UnknownTaskDefinition, match=r"pixfleet-worker has no ACTIVE revision \(revisions: pixfleet-worker:1 INACTIVE\)"
    ):
        registry.get("pixfleet-worker")


def test_revisions_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state" / "taskdefs.json"
    registry = TaskDefinitionRegistry(state)
    registry.load_dir(SHIPPED_DIR)
    registry.register(with_container(stopTimeout=60), "edited.json")
    registry.deregister("pixfleet-api:1")

    again = TaskDefinitionRegistry(state)
    assert again.families() == ["pixfleet-api", "pixfleet-deadletter", "pixfleet-worker"]
    assert [t.key for t in again.revisions("pixfleet-worker")] == ["pixfleet-worker:1", "pixfleet-worker:2"]
    assert again.revisions("pixfleet-worker") == registry.revisions("pixfleet-worker")
    assert again.status("pixfleet-api:1") == INACTIVE
    # the shipped files are unchanged since :1, but the latest worker revision is :2 — so loading them is a change
    assert [t.key for t in again.load_dir(SHIPPED_DIR)] == [
        "pixfleet-api:2",
        "pixfleet-deadletter:1",
        "pixfleet-worker:3",
    ]
    assert [t.key for t in TaskDefinitionRegistry(state).load_dir(SHIPPED_DIR)] == [
        "pixfleet-api:2",
        "pixfleet-deadletter:1",
        "pixfleet-worker:3",
    ]


def test_corrupt_state_fails_loudly(tmp_path: Path) -> None:
    state = tmp_path / "taskdefs.json"
    state.write_text("{not json")
    with pytest.raises(TaskDefinitionError, match="unreadable registry state"):
        TaskDefinitionRegistry(state)


def test_load_dir_checks_every_file_before_registering_any(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(doc()))
    (tmp_path / "b.json").write_text(json.dumps(with_container(stopTimeout=0)))
    (tmp_path / "c.json").write_text("{")
    (tmp_path / "d.json").write_text(json.dumps(doc(cpu="512")))
    registry = TaskDefinitionRegistry()
    with pytest.raises(TaskDefinitionError) as info:
        registry.load_dir(tmp_path)
    assert info.value.problems == [
        f"{tmp_path / 'b.json'}: containerDefinitions[0].stopTimeout: must be an integer in 2..120",
        f"{tmp_path / 'c.json'}: invalid JSON at line 1 column 2: Expecting property name enclosed in double quotes",
        f"{tmp_path / 'd.json'}: family: 'pixfleet-worker' is already defined by {tmp_path / 'a.json'}",
    ]
    assert registry.families() == []


# --- placeholders and roles ------------------------------------------------------------------------

PLACEHOLDER_CASES: list[tuple[Any, dict[int, int], bool, Any]] = [
    ("${PORT_8081}", {8081: 40000}, False, "40000"),
    ("http://127.0.0.1:${PORT_8081}/healthz?${PORT_9090}", {8081: 1, 9090: 2}, False, "http://127.0.0.1:1/healthz?2"),
    ("no placeholders, ${HOME} left to the shell", {}, False, "no placeholders, ${HOME} left to the shell"),
    (["CMD", "probe", "${PORT_80}"], {80: 8000}, False, ["CMD", "probe", "8000"]),
    (("CMD", "${PORT_80}"), {80: 8000}, False, ("CMD", "8000")),
    ({"A": "${PORT_80}", "B": "x"}, {80: 8000}, False, {"A": "8000", "B": "x"}),
    ("${PORT_8081}", {}, True, "${PORT_8081}: no host port for containerPort '8081' (assigned: none)"),
    ("${PORT_abc}", {80: 1}, True, "${PORT_abc}: no host port for containerPort 'abc' (assigned: 80)"),
]


@pytest.mark.parametrize(("value", "ports", "is_error", "expected"), PLACEHOLDER_CASES)
def test_render_placeholders(value: Any, ports: dict[int, int], is_error: bool, expected: Any) -> None:
    if is_error:
        with pytest.raises(PlaceholderError) as info:
            render_placeholders(value, ports)
        assert str(info.value) == expected
    else:
        assert render_placeholders(value, ports) == expected


def test_resolved_container_uses_assigned_and_fixed_ports() -> None:
    td = parse_task_definition(
        with_container(
            environment=[{"name": "HEALTH", "value": "${PORT_8081}"}, {"name": "ADMIN", "value": "${PORT_9000}"}],
            portMappings=[{"containerPort": 8081}, {"containerPort": 9000, "hostPort": 9000}],
            healthCheck={"command": ["CMD-SHELL", "curl -f http://127.0.0.1:${PORT_8081}/healthz"]},
        ),
        SOURCE,
    )
    c = td.main_container
    resolved = c.resolved({8081: 45000})
    assert resolved.environment == {"HEALTH": "45000", "ADMIN": "9000"}
    assert resolved.health_check is not None
    assert resolved.health_check.command == ("CMD-SHELL", "curl -f http://127.0.0.1:45000/healthz")
    assert c.environment["HEALTH"] == "${PORT_8081}"  # the definition itself is unchanged
    with pytest.raises(PlaceholderError):
        c.resolved({})  # the dynamic port was never assigned


ROLE_ARNS = {
    "api": "arn:aws:iam::123456789012:role/pixfleet-api",
    "worker": "arn:aws:iam::123456789012:role/pixfleet-worker",
}


@pytest.mark.parametrize(
    ("value", "is_error", "expected"),
    [
        ("pixfleet-worker", False, ROLE_ARNS["worker"]),
        ("api", False, ROLE_ARNS["api"]),
        ("arn:aws:iam::999999999999:role/elsewhere", False, "arn:aws:iam::999999999999:role/elsewhere"),
        (
            "pixfleet-orchestrator",
            True,
            "task role 'pixfleet-orchestrator' is neither an ARN nor one of the stack's roles: "
            "api (pixfleet-api), worker (pixfleet-worker)",
        ),
    ],
)
def test_resolve_role_arn(value: str, is_error: bool, expected: str) -> None:
    if is_error:
        with pytest.raises(UnknownRole) as info:
            resolve_role_arn(value, ROLE_ARNS)
        assert str(info.value) == expected
    else:
        assert resolve_role_arn(value, ROLE_ARNS) == expected


# --- python -m services.api --healthcheck ------------------------------------------------------------


@pytest.fixture
def healthz_server() -> Iterator[Callable[[int], int]]:
    """Factory: a loopback HTTP server whose /healthz answers the given status; all closed at teardown."""
    servers: list[http.server.HTTPServer] = []

    def start(status: int) -> int:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"status": "ok" if status == 200 else "unavailable"}).encode()
                self.send_response(status if self.path == "/healthz" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _api_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXFLEET_")}  # no queue URL needed
    env.update(PIXFLEET_API_HOST="127.0.0.1", PIXFLEET_API_PORT=str(port))
    return subprocess.run(
        [sys.executable, "-m", "services.api", "--healthcheck"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_api_healthcheck_fails_when_nothing_listens() -> None:
    result = _api_healthcheck(free_port())
    assert result.returncode == 1, result.stderr
    assert "unhealthy" in result.stderr


@pytest.mark.parametrize(("status", "code"), [(200, 0), (503, 1)])
def test_api_healthcheck_reports_the_status(healthz_server: Callable[[int], int], status: int, code: int) -> None:
    result = _api_healthcheck(healthz_server(status))
    assert result.returncode == code, result.stderr
    assert json.loads(result.stdout)["status"] == ("ok" if status == 200 else "unavailable")
