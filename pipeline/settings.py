"""Per-process settings, read once from environment variables at the entry point.

Each service builds its own frozen settings object with ``from_env()`` and passes
it down into constructors; nothing reads the environment at import time. Every
invalid value is collected, then reported together in one :class:`SettingsError`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pipeline.transform.spec import Limits

T = TypeVar("T")
MiB = 1024 * 1024


class SettingsError(ValueError):
    """One or more environment variables are missing or invalid."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid settings:\n  - " + "\n  - ".join(problems))


class EnvReader:
    """Reads typed values from an environment mapping and remembers every problem."""

    def __init__(self, env: Mapping[str, str] | None = None):
        self.env = os.environ if env is None else env
        self.problems: list[str] = []

    def _get(self, name: str, default: T, parse: Callable[[str], T], check: Callable[[T], str | None] | None) -> T:
        raw = self.env.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = parse(raw.strip())
        except (TypeError, ValueError):
            self.problems.append(f"{name}={raw!r}: not a valid {getattr(parse, '__name__', 'value')}")
            return default
        problem = check(value) if check else None
        if problem:
            self.problems.append(f"{name}={raw!r}: {problem}")
            return default
        return value

    def str(self, name: str, default: Any = None) -> Any:
        return self._get(name, default, str, None)

    def required(self, name: str) -> str:
        value = self.env.get(name, "").strip()
        if not value:
            self.problems.append(f"{name} is required")
        return value

    def int(self, name: str, default: Any, *, min: float | None = None, max: float | None = None) -> Any:
        return self._get(name, default, int, _range(min, max))

    def float(self, name: str, default: Any, *, min: float | None = None, max: float | None = None) -> Any:
        return self._get(name, default, float, _range(min, max))

    def bool(self, name: str, default: bool) -> bool:
        return self._get(name, default, _parse_bool, None)

    def list(self, name: str) -> tuple[str, ...]:
        raw = self.env.get(name, "")
        return tuple(item.strip() for item in raw.split(",") if item.strip())

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def raise_if_problems(self) -> None:
        if self.problems:
            raise SettingsError(self.problems)


def _parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)


_parse_bool.__name__ = "boolean"


def _range(lo: float | None, hi: float | None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if lo is not None and value < lo:
            return f"must be >= {lo}"
        if hi is not None and value > hi:
            return f"must be <= {hi}"
        return None

    return check


@dataclass(frozen=True)
class AwsSettings:
    """Where the stack lives. ``endpoint_url`` is None on real AWS."""

    region: str
    input_bucket: str
    output_bucket: str
    queue_url: str
    dlq_url: str
    endpoint_url: str | None = None

    @classmethod
    def read(cls, r: EnvReader) -> AwsSettings:
        return cls(
            endpoint_url=r.str("AWS_ENDPOINT_URL"),
            region=r.str("AWS_REGION") or r.str("AWS_DEFAULT_REGION", "us-east-1"),
            input_bucket=r.str("PIXFLEET_INPUT_BUCKET", "pixfleet-input"),
            output_bucket=r.str("PIXFLEET_OUTPUT_BUCKET", "pixfleet-output"),
            queue_url=r.required("PIXFLEET_QUEUE_URL"),
            dlq_url=r.str("PIXFLEET_DLQ_URL", ""),
        )

    def env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings in a child process."""
        env = {
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "PIXFLEET_INPUT_BUCKET": self.input_bucket,
            "PIXFLEET_OUTPUT_BUCKET": self.output_bucket,
            "PIXFLEET_QUEUE_URL": self.queue_url,
            "PIXFLEET_DLQ_URL": self.dlq_url,
        }
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        return env


def _read_limits(r: EnvReader) -> Limits:
    return Limits(
        max_bytes=r.int("PIXFLEET_MAX_BYTES", Limits.max_bytes, min=1),
        max_pixels=r.int("PIXFLEET_MAX_PIXELS", Limits.max_pixels, min=1),
        max_frames=r.int("PIXFLEET_MAX_FRAMES", Limits.max_frames, min=1),
    )


@dataclass(frozen=True)
class ApiSettings:
    """Settings of the upload API process."""

    aws: AwsSettings
    host: str = "127.0.0.1"
    port: int = 8080
    limits: Limits = field(default_factory=Limits)
    part_size: int = 8 * MiB
    buffer_budget: int = 16 * MiB
    buffer_wait: float = 5.0
    api_keys: tuple[str, ...] = ()
    presign_expires: int = 900
    default_preset: str = "web"
    aws_timeout: float = 5.0
    public_s3_url: str = ""
    orchestrator_url: str = ""  # read-only fleet views (GET /v1/fleet); set for tasks by the orchestrator

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        r = EnvReader(env)
        settings = cls(
            aws=AwsSettings.read(r),
            host=r.str("PIXFLEET_API_HOST", "127.0.0.1"),
            port=r.int("PIXFLEET_API_PORT", 8080, min=0, max=65535),
            limits=_read_limits(r),
            part_size=r.int("PIXFLEET_API_PART_SIZE", 8 * MiB, min=5 * MiB, max=512 * MiB),
            buffer_budget=r.int("PIXFLEET_API_BUFFER_BUDGET", 16 * MiB, min=5 * MiB),
            buffer_wait=r.float("PIXFLEET_API_BUFFER_WAIT", 5.0, min=0.1, max=300),
            api_keys=r.list("PIXFLEET_API_KEYS"),
            presign_expires=r.int("PIXFLEET_PRESIGN_EXPIRES", 900, min=60, max=7 * 24 * 3600),
            default_preset=r.str("PIXFLEET_DEFAULT_PRESET", "web"),
            aws_timeout=r.float("PIXFLEET_AWS_TIMEOUT", 5.0, min=0.1),
            public_s3_url=r.str("PIXFLEET_PUBLIC_S3_URL", ""),
            orchestrator_url=r.str("PIXFLEET_ORCHESTRATOR_URL", ""),
        )
        r.check(settings.buffer_budget >= settings.part_size, "PIXFLEET_API_BUFFER_BUDGET must be >= PIXFLEET_API_PART_SIZE")
        r.raise_if_problems()
        return settings


def _task_worker_id(r: EnvReader) -> str:
    """Under the orchestrator a worker is known by its task id (short form, as in the events)."""
    task_id = r.str("PIXFLEET_TASK_ID", "")
    return f"worker-{task_id[:8]}" if task_id else ""


@dataclass(frozen=True)
class WorkerSettings:
    """Settings of one worker process."""

    aws: AwsSettings
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    concurrency: int = field(default_factory=lambda: os.cpu_count() or 1)
    processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    batch_size: int = 10
    wait_time: int = 20
    visibility_timeout: int = 60
    grace_period: float = 25.0
    limits: Limits = field(default_factory=Limits)
    max_receive_count: int = 3
    health_host: str = "127.0.0.1"
    health_port: int | None = None
    idle_exit_after: float | None = None
    retry_base: float = 2.0

    @property
    def heartbeat_interval(self) -> float:
        """How often a running job's visibility timeout is extended."""
        return max(1.0, self.visibility_timeout / 3)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        r = EnvReader(env)
        cores = os.cpu_count() or 1
        idle = r.float("PIXFLEET_WORKER_IDLE_EXIT_AFTER", 0.0, min=0)
        health_port = r.int("PIXFLEET_WORKER_HEALTH_PORT", -1, min=-1, max=65535)
        settings = cls(
            aws=AwsSettings.read(r),
            worker_id=r.str("PIXFLEET_WORKER_ID", "") or _task_worker_id(r) or f"{socket.gethostname()}-{os.getpid()}",
            concurrency=r.int("PIXFLEET_WORKER_CONCURRENCY", cores, min=1, max=256),
            processes=r.int("PIXFLEET_WORKER_PROCESSES", cores, min=1, max=64),
            batch_size=r.int("PIXFLEET_WORKER_BATCH_SIZE", 10, min=1, max=10),
            wait_time=r.int("PIXFLEET_WORKER_WAIT_TIME", 20, min=0, max=20),
            visibility_timeout=r.int("PIXFLEET_VISIBILITY_TIMEOUT", 60, min=5, max=43200),
            grace_period=r.float("PIXFLEET_WORKER_GRACE_PERIOD", 25.0, min=0),
            limits=_read_limits(r),
            max_receive_count=r.int("PIXFLEET_MAX_RECEIVE_COUNT", 3, min=1, max=1000),
            health_host=r.str("PIXFLEET_WORKER_HEALTH_HOST", "127.0.0.1"),
            health_port=None if health_port < 0 else health_port,
            idle_exit_after=idle or None,
            retry_base=r.float("PIXFLEET_WORKER_RETRY_BASE", 2.0, min=0),
        )
        r.raise_if_problems()
        return settings


@dataclass(frozen=True)
class DeadLetterSettings:
    """Settings of the dead-letter recorder (services/deadletter)."""

    aws: AwsSettings
    max_receive_count: int = 3
    poll_interval: float = 2.0
    full_pass_interval: float = 60.0
    health_host: str = "127.0.0.1"
    health_port: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DeadLetterSettings:
        r = EnvReader(env)
        health_port = r.int("PIXFLEET_DEADLETTER_HEALTH_PORT", -1, min=-1, max=65535)
        settings = cls(
            aws=AwsSettings.read(r),
            max_receive_count=r.int("PIXFLEET_MAX_RECEIVE_COUNT", 3, min=1, max=1000),
            poll_interval=r.float("PIXFLEET_DEADLETTER_POLL_INTERVAL", 2.0, min=0.1, max=300),
            full_pass_interval=r.float("PIXFLEET_DEADLETTER_FULL_PASS", 60.0, min=1, max=86400),
            health_host=r.str("PIXFLEET_DEADLETTER_HEALTH_HOST", "127.0.0.1"),
            health_port=None if health_port < 0 else health_port,
        )
        r.check(bool(settings.aws.dlq_url), "PIXFLEET_DLQ_URL is required")
        r.raise_if_problems()
        return settings


REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class OrchestratorSettings:
    """Settings of the orchestrator process (the control plane)."""

    aws: AwsSettings
    cluster: str = "pixfleet"
    state_dir: str = ".pixfleet/orchestrator"
    taskdefs_dir: str = str(REPO_ROOT / "infra" / "taskdefs")
    services_file: str = str(REPO_ROOT / "infra" / "services.json")
    host: str = "127.0.0.1"
    port: int = 8090
    task_endpoint_url: str = ""
    runtime: str = "process"
    stop_tasks_on_exit: bool = True
    tick_interval: float = 0.5
    admin_token: str = ""
    docker_task_network: str = "pixfleet_tasks"
    docker_edge_network: str = "pixfleet_edge"
    task_images: tuple[tuple[str, str], ...] = ()

    @property
    def endpoint_for_tasks(self) -> str:
        """How tasks reach the credentials and metadata endpoints."""
        return self.task_endpoint_url or f"http://{self.host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OrchestratorSettings:
        r = EnvReader(env)
        settings = cls(
            aws=AwsSettings.read(r),
            cluster=r.str("PIXFLEET_CLUSTER", "pixfleet"),
            state_dir=r.str("PIXFLEET_ORCH_STATE_DIR", ".pixfleet/orchestrator"),
            taskdefs_dir=r.str("PIXFLEET_TASKDEFS_DIR", str(REPO_ROOT / "infra" / "taskdefs")),
            services_file=r.str("PIXFLEET_SERVICES_FILE", str(REPO_ROOT / "infra" / "services.json")),
            host=r.str("PIXFLEET_ORCH_HOST", "127.0.0.1"),
            port=r.int("PIXFLEET_ORCH_PORT", 8090, min=0, max=65535),
            task_endpoint_url=r.str("PIXFLEET_ORCH_TASK_ENDPOINT", ""),
            runtime=r.str("PIXFLEET_RUNTIME", "process"),
            stop_tasks_on_exit=r.bool("PIXFLEET_ORCH_STOP_TASKS_ON_EXIT", True),
            tick_interval=r.float("PIXFLEET_ORCH_TICK", 0.5, min=0.05, max=60),
            admin_token=r.str("PIXFLEET_ORCH_ADMIN_TOKEN", ""),
            docker_task_network=r.str("PIXFLEET_DOCKER_TASK_NETWORK", "pixfleet_tasks"),
            docker_edge_network=r.str("PIXFLEET_DOCKER_EDGE_NETWORK", "pixfleet_edge"),
            task_images=tuple(
                (family, image)
                for family, image in (
                    ("pixfleet-api", r.str("PIXFLEET_API_IMAGE", "")),
                    ("pixfleet-worker", r.str("PIXFLEET_WORKER_IMAGE", "")),
                    ("pixfleet-deadletter", r.str("PIXFLEET_WORKER_IMAGE", "")),  # the worker image runs it
                )
                if image
            ),
        )
        r.check(settings.runtime in ("process", "docker"), f"PIXFLEET_RUNTIME={settings.runtime!r}: must be 'process' or 'docker'")
        r.raise_if_problems()
        return settings
