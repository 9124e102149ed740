"""The task supervisor: starts tasks on a runtime, watches each until it exits, and stops it the ECS way.

* **Launch**: a task gets its own credentials token (its task role, through the
  credentials endpoint; never static keys) and an environment rendered once the
  runtime knows its host ports.
* **Watch**: one watcher per task waits for it to exit (→ STOPPED with exit code and
  reason) and, when its task definition has a health check, runs it: every second
  until the first success, then at the definition's ``interval``; failures within
  ``startPeriod`` do not count, ``retries`` failures in a row make it UNHEALTHY and
  stop it.
* **Stop**: ``before_stop`` first (the orchestrator drains the task out of its target
  groups), then SIGTERM, then SIGKILL after the container's ``stopTimeout`` (the runtime
  does both); the task is STOPPING meanwhile.

The supervisor owns the tasks' lifecycle, not the services': it tells a
:class:`TaskListener` (the orchestrator) what happened, and the listener decides
what that means for the service (a failed start, the launch throttle, an event).

Every coroutine it runs in the background (watchers, health checks, stops) is kept
and is awaited by :meth:`TaskSupervisor.close`; none is left to the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from typing import Any, Protocol

from services.orchestrator.credentials import CredentialVault
from services.orchestrator.model import HealthStatus, Task, TaskState
from services.orchestrator.runtime import HealthResult, LaunchSpec, Runtime
from services.orchestrator.taskdefs import TaskDefinition, TaskDefinitionRegistry

log = logging.getLogger("pixfleet.orchestrator")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class TaskListener(Protocol):
    """What the supervisor reports, synchronously, as it happens."""

    def task_started(self, task: Task) -> None:
        """The runtime started ``task`` (it is RUNNING)."""
        ...

    def task_healthy(self, task: Task) -> None:
        """``task`` passed its health check for the first time."""
        ...

    def task_stopped(self, task: Task, *, requested: bool) -> None:
        """``task`` is STOPPED; ``requested``: someone asked (a stop), rather than it exiting on its own."""
        ...


class TaskSupervisor:
    """Every task of one orchestrator, from launch to STOPPED."""

    def __init__(
        self,
        *,
        cluster: str,
        runtime: Runtime,
        registry: TaskDefinitionRegistry,
        vault: CredentialVault,
        role_arn: Callable[[str], str],
        task_env: dict[str, str],
        endpoint_url: str,
        listener: TaskListener,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        before_stop: Callable[[Task], Awaitable[Any]] | None = None,
    ):
        self.cluster = cluster
        self.before_stop = before_stop  # e.g. drain the task out of its target groups
        self.runtime = runtime
        self.registry = registry
        self.vault = vault
        self.role_arn = role_arn
        self.task_env = task_env
        self.endpoint_url = endpoint_url.rstrip("/")
        self.listener = listener
        self.clock = clock
        self.sleep = sleep
        self.tasks: dict[str, Task] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._stops: set[asyncio.Task[None]] = set()

    # --- launch ------------------------------------------------------------------------------

    def environment(self, task: Task, taskdef: TaskDefinition, ports: dict[int, int]) -> dict[str, str]:
        """The task's environment: its definition's, the stack's, its overrides, and the endpoints it talks to."""
        env = dict(taskdef.main_container.resolved(ports).environment)
        env.update(self.task_env)
        env.update(task.overrides)
        env.update(
            {
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{self.endpoint_url}/v1/credentials/{task.task_id}",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN": task.token,
                "ECS_CONTAINER_METADATA_URI_V4": f"{self.endpoint_url}/v1/metadata/{task.task_id}",
                "PIXFLEET_ORCHESTRATOR_URL": self.endpoint_url,  # read-only views (e.g. the API's fleet panel)
                "PIXFLEET_TASK_ID": task.task_id,
            }
        )
        for secret in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            env.pop(secret, None)  # only the credentials endpoint, never static keys
        return env

    async def launch(
        self,
        taskdef: TaskDefinition,
        *,
        service: str | None,
        group: str,
        overrides: dict[str, str] | None = None,
        command: list[str] | None = None,
        started_by: str | None = None,
    ) -> Task:
        """Start one task of ``taskdef``. A task that cannot start is returned STOPPED, with the reason."""
        task_id = uuid.uuid4().hex
        task = Task(
            task_id=task_id,
            taskdef=taskdef.key,
            service=service,
            group=group,
            overrides=dict(overrides or {}),
            command=list(command) if command is not None else None,
            started_by=started_by,
        )
        self.tasks[task_id] = task
        try:
            task.token = self.vault.register(task_id, self.role_arn(taskdef.task_role_arn))
        except Exception as exc:
            self.stopped(task, None, f"CannotStartContainerError: {exc}")
            return task
        container = taskdef.main_container
        spec = LaunchSpec(
            task_id=task_id,
            cluster=self.cluster,
            service=service,
            family=taskdef.family,
            revision=taskdef.revision,
            command=tuple(container.command if task.command is None else task.command),
            image=container.image,
            environment={},
            port_mappings=tuple((p.container_port, p.host_port) for p in container.port_mappings),
            cpu_units=taskdef.cpu,
            memory_mib=taskdef.memory,
            labels={
                "pixfleet.cluster": self.cluster,
                "pixfleet.service": service or "",
                "pixfleet.task": task_id,
                "pixfleet.taskdef": taskdef.key,
            },
        )
        try:
            task.handle = await self.runtime.start(spec, lambda ports: self.environment(task, taskdef, ports))
        except Exception as exc:
            log.warning("could not start %s: %s", taskdef.key, exc)
            self.stopped(task, None, f"CannotStartContainerError: {exc}")
            return task
        task.state, task.started_at = TaskState.RUNNING, self.clock()
        self.watch(task)
        self.listener.task_started(task)
        return task

    def adopt(self, task: Task) -> None:
        """Take over a live task a previous orchestrator started (same token); finish its stop if it was stopping."""
        self.tasks[task.task_id] = task
        taskdef = self.registry.get(task.taskdef)
        self.vault.register(task.task_id, self.role_arn(taskdef.task_role_arn), token=task.token)
        self.watch(task)
        if task.state == TaskState.STOPPING:
            self._background(self.stop(task, task.stop_reason or "stopping"))

    # --- watch -------------------------------------------------------------------------------

    def watch(self, task: Task) -> None:
        watcher = asyncio.create_task(self._supervise(task), name=f"watch {task.task_id[:8]}")
        self._watchers[task.task_id] = watcher

        def forget(done: asyncio.Task[None]) -> None:
            if self._watchers.get(task.task_id) is done:
                del self._watchers[task.task_id]

        watcher.add_done_callback(forget)

    async def _supervise(self, task: Task) -> None:
        assert task.handle is not None
        taskdef = self.registry.get(task.taskdef)
        health = None
        if taskdef.main_container.health_check:
            health = asyncio.create_task(self._health_loop(task, taskdef), name=f"health {task.task_id[:8]}")
        try:
            code = await self.runtime.wait(task.handle)
        finally:
            if health is not None:
                health.cancel()
                (result,) = await asyncio.gather(health, return_exceptions=True)
                if isinstance(result, Exception):
                    log.warning("health checks of task %s ended: %r", task.task_id[:8], result, exc_info=result)
        if task.state != TaskState.STOPPED:
            self.stopped(task, code, task.stop_reason or f"Essential container in task exited (exit code {code})")

    async def _health_loop(self, task: Task, taskdef: TaskDefinition) -> None:
        assert task.handle is not None
        ports = dict(task.handle.ports)
        check = taskdef.main_container.resolved(ports).health_check
        assert check is not None
        command = tuple(check.command)
        env = self.environment(task, taskdef, ports)
        while task.state == TaskState.RUNNING:
            # Until the first success, look often; then at the task definition's interval.
            await self.sleep(check.interval if task.health == HealthStatus.HEALTHY else min(1.0, check.interval))
            if task.state != TaskState.RUNNING:
                return
            try:
                result = await self.runtime.health_check(task.handle, command, env, check.timeout)
            except Exception as exc:  # a failed check, never the end of checking
                log.warning("health check of task %s could not run: %r", task.task_id[:8], exc)
                result = HealthResult(False, f"health check could not run: {exc!r}")
            with suppress(ValueError):
                parsed = json.loads(result.output.strip().splitlines()[-1]) if result.output.strip() else None
                if isinstance(parsed, dict):
                    task.last_health = parsed
            if result.healthy:
                task.health_failures = 0
                if task.health != HealthStatus.HEALTHY:
                    task.health, task.healthy_at = HealthStatus.HEALTHY, self.clock()
                    self.listener.task_healthy(task)
                continue
            if self.clock() - (task.started_at or 0) < check.start_period and task.health != HealthStatus.HEALTHY:
                continue  # failures during the start period do not count
            task.health_failures += 1
            if task.health_failures >= check.retries:
                task.health = HealthStatus.UNHEALTHY
                self.begin_stop(task, f"Task failed container health checks: {result.output.strip()[-200:]}")
                return

    # --- stop --------------------------------------------------------------------------------

    def begin_stop(self, task: Task, reason: str) -> None:
        """Mark the task STOPPING now and stop it in the background (awaited by :meth:`close`)."""
        if task.state in (TaskState.STOPPING, TaskState.STOPPED):
            return
        task.desired_status, task.state = TaskState.STOPPED, TaskState.STOPPING
        task.stopping_at, task.stop_reason = self.clock(), reason
        self._background(self.stop(task, reason))

    async def stop(self, task: Task, reason: str) -> None:
        """Stop the task the ECS way and wait until it is STOPPED."""
        task.desired_status = TaskState.STOPPED
        task.stop_reason = task.stop_reason or reason
        if task.state == TaskState.STOPPED:
            return
        task.state = TaskState.STOPPING
        task.stopping_at = task.stopping_at or self.clock()
        if task.handle is None:
            self.stopped(task, None, task.stop_reason)
            return
        if self.before_stop is not None:
            try:
                await self.before_stop(task)
            except Exception as exc:  # a drain that fails must not keep the task running
                log.warning("before stopping task %s: %r", task.task_id[:8], exc)
        timeout = self.registry.get(task.taskdef).main_container.stop_timeout
        code = await self.runtime.stop(task.handle, timeout)
        self.stopped(task, code, task.stop_reason)

    def kill(self, task: Task) -> None:
        """SIGKILL the task (a failure drill, like `docker kill`); its watcher records the exit."""
        if task.handle is not None:
            self.runtime.kill(task.handle)

    def stopped(self, task: Task, code: int | None, reason: str) -> None:
        """Record that the task is STOPPED (once), revoke its credentials, and tell the listener."""
        if task.state == TaskState.STOPPED:
            return
        requested = task.desired_status == TaskState.STOPPED
        task.state, task.desired_status, task.stopped_at = TaskState.STOPPED, TaskState.STOPPED, self.clock()
        task.exit_code = code if task.exit_code is None else task.exit_code
        task.stop_reason = reason
        self.vault.revoke(task.task_id)
        self.listener.task_stopped(task, requested=requested)

    def prune(self, keep: int = 200) -> None:
        """Forget all but the ``keep`` most recently stopped tasks."""
        stopped = sorted(
            (t for t in self.tasks.values() if t.state == TaskState.STOPPED), key=lambda t: t.stopped_at or 0
        )
        for task in stopped[:-keep] if len(stopped) > keep else []:
            self.tasks.pop(task.task_id, None)

    # --- background work ---------------------------------------------------------------------

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        job = asyncio.create_task(work)
        self._stops.add(job)
        job.add_done_callback(self._stops.discard)

    async def close(self, *, stop_tasks: bool) -> int:
        """Stop every task (or leave them running for a successor), then end every watcher; return tasks stopped."""
        live = [t for t in self.tasks.values() if t.state != TaskState.STOPPED]
        if stop_tasks:
            pending = [*self._stops, *(asyncio.ensure_future(self.stop(t, "Orchestrator shutting down")) for t in live)]
        else:
            for job in self._stops:  # a successor finishes these stops (the tasks are saved as STOPPING)
                job.cancel()
            pending = list(self._stops)
        for result in await asyncio.gather(*pending, return_exceptions=True):
            if isinstance(result, Exception):
                log.warning("stopping a task failed: %r", result)
        watchers = list(self._watchers.values())
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        return len(live) if stop_tasks else 0
