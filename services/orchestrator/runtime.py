"""The seam between the orchestrator and whatever runs tasks.

A runtime starts one container definition of a task definition as a task,
reports when it exits, stops it the ECS way (SIGTERM, then SIGKILL after
``stopTimeout``), runs its health check, and finds its tasks again after an
orchestrator restart. ``process`` runs local processes (the embedded default);
``docker`` runs containers. :data:`RUNTIMES` is the one place that maps a name
to an implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a runtime needs to start a task."""

    task_id: str
    cluster: str
    service: str | None
    family: str
    revision: int
    command: tuple[str, ...]
    image: str
    environment: dict[str, str]
    port_mappings: tuple[tuple[int, int | None], ...]  # (containerPort, hostPort or None for dynamic)
    cpu_units: int
    memory_mib: int
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HealthResult:
    healthy: bool
    output: str


class Runtime(Protocol):
    """What the orchestrator needs from a task runtime. Handles are JSON-serialisable dicts."""

    name: str

    async def start(self, spec: LaunchSpec, resolve_env: Callable[[dict[int, int]], dict[str, str]]) -> dict[str, Any]:
        """Start the task; ``resolve_env(ports)`` renders the environment once host ports are known."""
        ...

    async def wait(self, handle: dict[str, Any]) -> int | None:
        """Return when the task has exited, with its exit code (None when unknowable)."""
        ...

    async def stop(self, handle: dict[str, Any], timeout: float) -> int | None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; return the exit code."""
        ...

    def kill(self, handle: dict[str, Any]) -> None:
        """SIGKILL now."""
        ...

    async def alive(self, handle: dict[str, Any]) -> bool:
        """Is this (adopted) task still running?"""
        ...

    async def health_check(
        self, handle: dict[str, Any], command: tuple[str, ...], env: dict[str, str], timeout: float
    ) -> HealthResult:
        """Run the task definition's health check command against the task."""
        ...

    def port_bindings(self, handle: dict[str, Any]) -> dict[int, int]:
        """containerPort → host port of a started task."""
        ...

    async def strays(self, known: set[str]) -> list[dict[str, Any]]:
        """Tasks of this cluster that the runtime can see but ``known`` (task ids) does not list."""
        ...


def create_runtime(name: str, **kwargs: Any) -> Runtime:
    """Build the runtime called ``name`` (``process`` or ``docker``)."""
    factory = RUNTIMES.get(name)
    if factory is None:
        raise ValueError(f"unknown runtime {name!r}; known: {', '.join(sorted(RUNTIMES))}")
    return factory(**kwargs)


def _process(**kwargs: Any) -> Runtime:
    from services.orchestrator.process_runtime import ProcessRuntime

    return ProcessRuntime(**kwargs)


def _docker(**kwargs: Any) -> Runtime:
    from services.orchestrator.docker_runtime import DockerRuntime

    return DockerRuntime(**kwargs)


RUNTIMES: dict[str, Callable[..., Runtime]] = {"process": _process, "docker": _docker}
