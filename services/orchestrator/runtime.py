"""The seam between the orchestrator and whatever runs tasks.

A runtime starts one container definition of a task definition as a task,
reports when it exits, stops it the ECS way (SIGTERM, then SIGKILL after
``stopTimeout``), runs its health check, and finds its tasks again after an
orchestrator restart. ``process`` runs local processes (the embedded default);
``docker`` runs containers. :data:`RUNTIMES` is the one place that maps a name
to an implementation.

A started task is known by its :class:`TaskHandle`, which the orchestrator saves in
``state.json`` (:meth:`TaskHandle.to_json`) to find the task again after a restart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
class TaskHandle:
    """How a runtime finds a task it started: a process (``pid``) or a container (``container_id``)."""

    task_id: str
    pid: int | None = None
    container_id: str | None = None
    ports: Mapping[int, int] = field(default_factory=dict)  # containerPort → host port
    log: str | None = None  # the process runtime's log file
    name: str | None = None  # the container's name
    address: str | None = None  # the IP others reach the task's container ports at (None: loopback, host ports)

    def to_json(self) -> dict[str, Any]:
        """The handle as saved in ``state.json`` (ports keyed by strings, unset fields left out)."""
        doc: dict[str, Any] = {"task_id": self.task_id}
        if self.pid is not None:
            doc["pid"] = self.pid
        if self.container_id is not None:
            doc["container_id"] = self.container_id
        doc["ports"] = {str(k): v for k, v in self.ports.items()}
        if self.log is not None:
            doc["log"] = self.log
        if self.name is not None:
            doc["name"] = self.name
        if self.address is not None:
            doc["address"] = self.address
        return doc

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> TaskHandle | None:
        """A saved handle; ``None`` for a task that never started (no process, no container)."""
        pid, container_id = raw.get("pid"), raw.get("container_id")
        if not pid and not container_id:
            return None
        return cls(
            task_id=str(raw.get("task_id", "")),
            pid=int(pid) if pid else None,
            container_id=str(container_id) if container_id else None,
            ports={int(k): int(v) for k, v in (raw.get("ports") or {}).items()},
            log=raw.get("log"),
            name=raw.get("name"),
            address=raw.get("address"),
        )


def target_address(handle: TaskHandle, container_port: int) -> tuple[str, int] | None:
    """Where a load balancer reaches one container port of a task: its address and port, None if unmapped.

    A container (``address`` set) is reached on its own network at the container port; a process
    on loopback at the host port the runtime gave it.
    """
    if handle.address is not None:
        return handle.address, container_port
    port = handle.ports.get(container_port)
    return None if port is None else ("127.0.0.1", port)


@dataclass(frozen=True)
class HealthResult:
    healthy: bool
    output: str


class Runtime(Protocol):
    """What the orchestrator needs from a task runtime."""

    name: str

    async def start(self, spec: LaunchSpec, resolve_env: Callable[[dict[int, int]], dict[str, str]]) -> TaskHandle:
        """Start the task; ``resolve_env(ports)`` renders the environment once host ports are known."""
        ...

    async def wait(self, handle: TaskHandle) -> int | None:
        """Return when the task has exited, with its exit code (None when unknowable)."""
        ...

    async def stop(self, handle: TaskHandle, timeout: float) -> int | None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; return the exit code."""
        ...

    def kill(self, handle: TaskHandle) -> None:
        """SIGKILL now."""
        ...

    async def alive(self, handle: TaskHandle) -> bool:
        """Is this (adopted) task still running?"""
        ...

    async def health_check(
        self, handle: TaskHandle, command: tuple[str, ...], env: dict[str, str], timeout: float
    ) -> HealthResult:
        """Run the task definition's health check command against the task."""
        ...

    async def strays(self, known: set[str]) -> list[TaskHandle]:
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
