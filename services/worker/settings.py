"""Settings of one worker process, read once from the environment at its entry point."""

from __future__ import annotations

import os
import socket
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from pipeline.settings import AwsSettings, ServiceSettings, env
from pipeline.transform.spec import Limits


def _cores() -> int:
    return os.cpu_count() or 1


def _worker_id(fields: dict[str, Any]) -> str:
    """Under the orchestrator a worker is known by its task id (short form, as in the events)."""
    task_id = fields.get("task_id")
    return f"worker-{task_id[:8]}" if task_id else f"{socket.gethostname()}-{os.getpid()}"


class WorkerSettings(ServiceSettings):
    """Settings of one worker process.

    ``visibility_timeout`` and ``max_receive_count`` are the job queue's own (its
    ``VisibilityTimeout`` and its redrive policy's ``maxReceiveCount``, read when the worker
    starts) unless the environment overrides them: the stack is their one source.
    """

    # First: a default computed from other fields is computed only if all fields before it are valid.
    task_id: str = env("PIXFLEET_TASK_ID", "")
    worker_id: str = env("PIXFLEET_WORKER_ID", default_factory=_worker_id)
    aws: AwsSettings
    concurrency: int = env("PIXFLEET_WORKER_CONCURRENCY", default_factory=_cores, ge=1, le=256)
    processes: int = env("PIXFLEET_WORKER_PROCESSES", default_factory=_cores, ge=1, le=64)
    batch_size: int = env("PIXFLEET_WORKER_BATCH_SIZE", 10, ge=1, le=10)
    wait_time: int = env("PIXFLEET_WORKER_WAIT_TIME", 20, ge=0, le=20)
    visibility_timeout: int | None = env("PIXFLEET_VISIBILITY_TIMEOUT", None, ge=5, le=43200)
    grace_period: float = env("PIXFLEET_WORKER_GRACE_PERIOD", 25.0, ge=0)
    limits: Limits = Field(default_factory=Limits)
    max_receive_count: int | None = env("PIXFLEET_MAX_RECEIVE_COUNT", None, ge=1, le=1000)
    health_host: str = env("PIXFLEET_WORKER_HEALTH_HOST", "127.0.0.1")
    health_port: int | None = env("PIXFLEET_WORKER_HEALTH_PORT", None, ge=0, le=65535)
    # Batch mode: exit 0 once the queue stayed empty this long (0: never).
    idle_exit_after: Annotated[float | None, AfterValidator(lambda v: v or None)] = env(
        "PIXFLEET_WORKER_IDLE_EXIT_AFTER", None, ge=0
    )
    retry_base: float = env("PIXFLEET_WORKER_RETRY_BASE", 2.0, ge=0)
