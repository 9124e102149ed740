"""Settings of one worker process, read once from the environment at its entry point."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.settings import AwsSettings, EnvReader, read_limits
from pipeline.transform.spec import Limits


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
            limits=read_limits(r),
            max_receive_count=r.int("PIXFLEET_MAX_RECEIVE_COUNT", 3, min=1, max=1000),
            health_host=r.str("PIXFLEET_WORKER_HEALTH_HOST", "127.0.0.1"),
            health_port=None if health_port < 0 else health_port,
            idle_exit_after=idle or None,
            retry_base=r.float("PIXFLEET_WORKER_RETRY_BASE", 2.0, min=0),
        )
        r.raise_if_problems()
        return settings
