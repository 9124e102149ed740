"""Run tasks as Docker containers, the ECS way, with the Docker SDK.

* Limits from the task definition: ``cpu`` units → ``nano_cpus`` (1024 units = 1 CPU),
  ``memory`` MiB → a hard memory limit.
* Labels identify cluster, service, task and task definition, so a restarted
  orchestrator finds its containers again (and removes strays).
* Networks like private subnets: every task joins the internal task network
  (``169.254.170.0/24``, where the orchestrator answers at 169.254.170.2 with
  ECS-style credentials); only a task whose task definition publishes a host port
  (the API) is also attached to the edge network that publishes it.
* Images as from ECR: one the engine lacks is pulled first, by digest when the task
  definition names one (``127.0.0.1:5000/pixfleet/api@sha256:…``); a registry that does
  not answer is a clear ``CannotPullContainerError`` (:func:`ensure_image`).
* Stop as ECS: ``docker stop`` sends SIGTERM and SIGKILLs after the container
  definition's ``stopTimeout``. Stopped containers are removed after their log is
  saved, so ``docker compose down`` leaves nothing behind.

The Docker SDK is synchronous: calls run in a thread pool of their own, large
enough for one blocking ``wait`` per task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import docker.errors

from services.orchestrator.runtime import HealthResult, LaunchSpec, TaskHandle

log = logging.getLogger("pixfleet.runtime.docker")


class DockerRuntime:
    """Tasks as containers on one Docker engine."""

    name = "docker"

    def __init__(
        self,
        *,
        cluster: str = "pixfleet",
        task_network: str,
        edge_network: str | None = None,
        images: dict[str, str] | None = None,
        log_dir: Path | str | None = None,
        client: docker.DockerClient | None = None,
        **_: Any,
    ):
        self.cluster = cluster
        self.task_network = task_network
        self.edge_network = edge_network
        self.images = images or {}
        self.log_dir = Path(log_dir) if log_dir else None
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        self.client = client or docker.from_env()
        self._pool = ThreadPoolExecutor(max_workers=128, thread_name_prefix="docker")

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    def image_for(self, spec: LaunchSpec) -> str:
        return self.images.get(spec.family) or spec.image

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, spec: LaunchSpec, resolve_env: Callable[[dict[int, int]], dict[str, str]]) -> TaskHandle:
        # Inside its own network namespace a task listens on its container ports.
        env = resolve_env({container: container for container, _ in spec.port_mappings})
        published = {f"{container}/tcp": host for container, host in spec.port_mappings if host is not None}
        labels = {
            "pixfleet.cluster": self.cluster,
            "pixfleet.service": spec.service or "",
            "pixfleet.task": spec.task_id,
            "pixfleet.taskdef": f"{spec.family}:{spec.revision}",
            **spec.labels,
        }
        first_network = self.edge_network if published and self.edge_network else self.task_network
        await self._call(ensure_image, self.client, self.image_for(spec))
        container = await self._call(
            self.client.containers.create,
            self.image_for(spec),
            command=list(spec.command) or None,
            environment={**env, "PIXFLEET_TASK_ID": spec.task_id},
            name=f"{self.cluster}-{spec.family}-{spec.task_id[:12]}",
            labels=labels,
            network=first_network,
            ports=published or None,
            nano_cpus=int(spec.cpu_units / 1024 * 1e9) if spec.cpu_units else None,
            mem_limit=f"{spec.memory_mib}m" if spec.memory_mib else None,
            init=True,  # signals reach the service; zombies are reaped
            # The task definition's healthCheck is run by the orchestrator; the image's own HEALTHCHECK
            # (the worker image's, in a dead-letter task) would only show a misleading state in `docker ps`.
            healthcheck={"test": ["NONE"]},
            detach=True,
        )
        try:
            if first_network != self.task_network:
                network = await self._call(self.client.networks.get, self.task_network)
                await self._call(network.connect, container)
            await self._call(container.start)
        except Exception:
            await self._call(container.remove, force=True)
            raise
        await self._call(container.reload)
        ports = {container_port: container_port for container_port, _ in spec.port_mappings}
        for key, bindings in (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).items():
            if bindings:
                ports[int(key.split("/")[0])] = int(bindings[0]["HostPort"])
        networks = container.attrs.get("NetworkSettings", {}).get("Networks") or {}
        address = (networks.get(self.task_network) or {}).get("IPAddress") or None  # the load balancer's way in
        log.info("started %s task %s (container %s)", spec.family, spec.task_id[:8], container.short_id)
        return TaskHandle(
            task_id=spec.task_id, container_id=container.id, ports=ports, name=container.name, address=address
        )

    async def wait(self, handle: TaskHandle) -> int | None:
        try:
            container = await self._call(self.client.containers.get, _container_id(handle))
            result = await self._call(container.wait)
        except docker.errors.NotFound:
            return None
        code = int(result.get("StatusCode", -1))
        # Docker reports a SIGKILLed process as 137 (128 + 9), as ECS does.
        await self._save_log_and_remove(container, handle)
        return code

    async def _save_log_and_remove(self, container: Any, handle: TaskHandle) -> None:
        try:
            if self.log_dir:
                logs = await self._call(container.logs, stdout=True, stderr=True)
                (self.log_dir / f"{handle.name or container.name}.log").write_bytes(logs)
            await self._call(container.remove, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:  # removal already in progress
            log.debug("remove %s: %s", container.name, exc)

    async def stop(self, handle: TaskHandle, timeout: float) -> int | None:
        try:
            container = await self._call(self.client.containers.get, _container_id(handle))
            await self._call(container.stop, timeout=int(timeout))
        except docker.errors.NotFound:
            return None
        return await self.wait(handle)

    def kill(self, handle: TaskHandle) -> None:
        with contextlib.suppress(docker.errors.APIError):
            self.client.containers.get(_container_id(handle)).kill()

    async def alive(self, handle: TaskHandle) -> bool:
        try:
            container = await self._call(self.client.containers.get, _container_id(handle))
        except docker.errors.NotFound:
            return False
        return container.status in ("running", "created", "restarting")

    async def health_check(
        self, handle: TaskHandle, command: tuple[str, ...], env: dict[str, str], timeout: float
    ) -> HealthResult:
        kind, *rest = command
        argv = ["/bin/sh", "-c", rest[0]] if kind == "CMD-SHELL" else rest
        try:
            container = await self._call(self.client.containers.get, _container_id(handle))
            result = await asyncio.wait_for(self._call(container.exec_run, argv), timeout)
        except TimeoutError:
            return HealthResult(False, f"health check timed out after {timeout}s: {shlex.join(argv)}")
        except docker.errors.APIError as exc:
            return HealthResult(False, f"health check could not run: {exc}")
        return HealthResult(result.exit_code == 0, (result.output or b"").decode(errors="replace")[-4096:])

    async def strays(self, known: set[str]) -> list[TaskHandle]:
        """Containers of this cluster that the orchestrator's state does not know (to be removed)."""
        containers = await self._call(
            self.client.containers.list,
            all=True,
            filters={"label": f"pixfleet.cluster={self.cluster}"},
            ignore_removed=True,  # one removed between the listing and its inspection is not a stray
        )
        return [
            TaskHandle(task_id=c.labels.get("pixfleet.task", ""), container_id=c.id, name=c.name)
            for c in containers
            if c.labels.get("pixfleet.task") not in known
        ]


def _container_id(handle: TaskHandle) -> str:
    if handle.container_id is None:
        raise ValueError(f"task {handle.task_id[:8]} has no container (a process handle given to the docker runtime)")
    return handle.container_id


# --- images: pulled by digest when the engine lacks them (the ECR part) ---------------------------


class ImagePullError(RuntimeError):
    """The image is not on this engine and could not be pulled (ECS's CannotPullContainerError)."""

    code = "CannotPullContainerError"


def ensure_image(client: docker.DockerClient, reference: str) -> bool:
    """Make sure the engine has ``reference``; pull it when it does not. True if it was pulled.

    ``repo@sha256:…`` pulls exactly that manifest, so what runs is what the task definition
    pinned, whatever a tag points to now.
    """
    try:
        client.images.get(reference)
        return False
    except docker.errors.ImageNotFound:
        pass
    repository, at, digest = reference.partition("@")
    if at:
        tag = digest
    else:
        name, colon, tag = reference.rpartition(":")
        repository, tag = (name, tag) if colon and "/" not in tag else (reference, "latest")
    first = repository.split("/", 1)[0]
    registry = first if "/" in repository and ("." in first or ":" in first or first == "localhost") else "Docker Hub"
    try:
        for chunk in client.api.pull(repository, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise ImagePullError(f"CannotPullContainerError: pulling {reference}: {chunk['error']}")
    except docker.errors.APIError as exc:
        detail = str(exc.explanation or exc)
        if "connection refused" in detail or "no such host" in detail or "i/o timeout" in detail:
            hint = "start it: docker compose up -d registry" if registry != "Docker Hub" else "is the network up?"
            raise ImagePullError(
                f"CannotPullContainerError: {reference} is not on this engine and the registry {registry}"
                f" does not answer ({hint})"
            ) from None
        if "manifest unknown" in detail or "not found" in detail:
            raise ImagePullError(
                f"CannotPullContainerError: {registry} has no {reference} (push it: pixfleet images build)"
            ) from None
        raise ImagePullError(f"CannotPullContainerError: pulling {reference} from {registry}: {detail}") from None
    log.info("pulled %s", reference)
    return True
