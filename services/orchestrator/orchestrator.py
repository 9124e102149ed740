"""The control plane: keeps every service at its desired count, scales workers from queue depth,
rolls deployments forward (or back), and hands each task its own role.

One loop, once a second:

1. observe the queue (one metric read) and, for services with a scaling policy,
   turn it into a desired count with :func:`scaling.decide` (a pure function);
2. reconcile every service: start missing tasks of the primary deployment (with
   crash-loop backoff), stop surplus ones (idle first) and old-revision ones
   within ``minimumHealthyPercent`` / ``maximumPercent``, roll back a deployment
   whose tasks keep failing, and record ECS-style service events.

Each task is watched by its own coroutine (exit → STOPPED with exit code and
reason) and health-checked with its task definition's command. State is saved
to disk, so a restarted orchestrator adopts the tasks that are still running.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.orchestrator.credentials import CredentialVault
from services.orchestrator.metric_sources import MetricSource
from services.orchestrator.model import (
    HEALTHY,
    PROVISIONING,
    RUNNING,
    STOPPED,
    STOPPING,
    UNHEALTHY,
    Deployment,
    EventLog,
    Service,
    ServiceConfig,
    Task,
    scaling_to_json,
)
from services.orchestrator.runtime import LaunchSpec, Runtime
from services.orchestrator.scaling import QueueMetrics, decide
from services.orchestrator.taskdefs import TaskDefinition, TaskDefinitionRegistry
from services.orchestrator.throttle import ThrottlePolicy, task_healthy, task_stopped

log = logging.getLogger("pixfleet.orchestrator")

STABLE_AFTER = 10.0  # a task without a health check that ran this long started fine
METRIC_FAILURE_EVENT_AFTER = 5


@dataclass
class OrchestratorMetrics:
    registry: CollectorRegistry
    queue: Gauge
    desired: Gauge
    running: Gauge
    decisions: Counter
    refreshes: Counter
    task_starts: Counter
    task_stops: Counter

    @classmethod
    def create(cls) -> OrchestratorMetrics:
        r = CollectorRegistry()
        return cls(
            registry=r,
            queue=Gauge(
                "pixfleet_queue_messages",
                "Job queue depth by kind (visible, in_flight, delayed, dlq)",
                ["kind"],
                registry=r,
            ),
            desired=Gauge("pixfleet_service_desired_tasks", "Desired tasks per service", ["service"], registry=r),
            running=Gauge("pixfleet_service_running_tasks", "Running tasks per service", ["service"], registry=r),
            decisions=Counter(
                "pixfleet_scaling_decisions",
                "Scaling decisions that changed the desired count",
                ["service", "action"],
                registry=r,
            ),
            refreshes=Counter(
                "pixfleet_credential_refreshes", "Task role credentials assumed or refreshed", registry=r
            ),
            task_starts=Counter("pixfleet_task_starts", "Tasks started", ["group"], registry=r),
            task_stops=Counter("pixfleet_task_stops", "Tasks stopped", ["group", "reason"], registry=r),
        )


class Orchestrator:
    """Services, tasks and their credentials, reconciled once per ``tick_interval``."""

    def __init__(
        self,
        *,
        cluster: str,
        registry: TaskDefinitionRegistry,
        services: list[ServiceConfig],
        runtime: Runtime,
        vault: CredentialVault,
        metric_source: MetricSource | None,
        state_dir: Path,
        task_env: dict[str, str],
        endpoint_url: str,
        role_arn: Callable[[str], str],
        tick_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        throttle_policy: ThrottlePolicy = ThrottlePolicy(),
    ):
        self.cluster = cluster
        self.registry = registry
        self.runtime = runtime
        self.vault = vault
        self.metric_source = metric_source
        self.state_dir = state_dir
        self.state_path = state_dir / "state.json"
        self.task_env = task_env
        self.endpoint_url = endpoint_url.rstrip("/")
        self.role_arn = role_arn
        self.tick_interval = tick_interval
        self.clock = clock
        self.throttle_policy = throttle_policy
        self.events = EventLog(state_dir / "events.jsonl")
        self.metrics = OrchestratorMetrics.create()
        self.vault.on_refresh = lambda task_id: self.metrics.refreshes.inc()
        self.tasks: dict[str, Task] = {}
        self.services: dict[str, Service] = {}
        for config in services:
            taskdef = registry.get(config.task_definition)
            self.services[config.name] = Service(
                config=config,
                desired_count=config.scaling.min if config.scaling else config.desired_count,
                deployments=[Deployment.new(taskdef.key, "service created")],
                scaling=config.scaling,
            )
            if config.scaling:
                self.services[config.name].desired_count = max(
                    config.scaling.min, min(config.scaling.max, config.desired_count)
                )
        self.queue: QueueMetrics | None = None
        self.dead_letters: int | None = None
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self.last_tick: float = 0.0

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load saved state (adopting live tasks), then start the control loop."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        await self._restore()
        self._loop_task = asyncio.create_task(self._loop())

    async def close(self, *, stop_tasks: bool = True) -> None:
        """Stop the loop; stop every task (or leave them running for a successor to adopt)."""
        self._closing = True
        if self._loop_task:
            self._loop_task.cancel()
            with suppress(asyncio.CancelledError):
                await self._loop_task
        if stop_tasks:
            live = [t for t in self.tasks.values() if t.state != STOPPED]
            await asyncio.gather(
                *(self._stop_task(t, "Orchestrator shutting down") for t in live), return_exceptions=True
            )
            self.events.add(None, f"orchestrator stopped {len(live)} task(s) on shutdown")
        else:
            self.events.add(None, "orchestrator exiting; tasks left running for the next orchestrator to adopt")
        for watcher in self._watchers.values():
            watcher.cancel()
        await asyncio.gather(*self._watchers.values(), return_exceptions=True)
        self._save()

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("control loop tick failed")
            self._wake.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick_interval)

    # --- one tick ----------------------------------------------------------------------------

    async def tick(self) -> None:
        now = self.clock()
        self.last_tick = now
        await self._observe()
        for service in self.services.values():
            self._autoscale(service, now)
            await self._reconcile(service, now)
            self.metrics.desired.labels(service.name).set(service.desired_count)
            self.metrics.running.labels(service.name).set(len(self._alive(service)))
        self._save()

    async def _observe(self) -> None:
        if self.metric_source is None:
            return
        try:
            self.queue = await asyncio.wait_for(self.metric_source.read(), 5)
            self.dead_letters = await asyncio.wait_for(self.metric_source.dead_letters(), 5)
        except Exception as exc:
            log.warning("queue metrics unavailable: %s", exc)
            self.queue = None
            return
        self.metrics.queue.labels("visible").set(self.queue.visible)
        self.metrics.queue.labels("in_flight").set(self.queue.in_flight)
        self.metrics.queue.labels("delayed").set(self.queue.delayed)
        if self.dead_letters is not None:
            self.metrics.queue.labels("dlq").set(self.dead_letters)

    def _autoscale(self, service: Service, now: float) -> None:
        if service.scaling is None or self.metric_source is None:
            return
        current = service.desired_count
        decision = decide(
            service.scaling, current, self.queue, now, service.scaling_state, self._mean_job_seconds(service)
        )
        service.scaling_state = decision.state
        service.last_decision = decision.reason
        if decision.action != "hold" and decision.desired != current:
            verb = "scaled out" if decision.action == "scale_out" else "scaled in"
            service.desired_count = decision.desired
            self.metrics.decisions.labels(service.name, decision.action).inc()
            self.events.add(service.name, f"{verb} from {current} to {decision.desired} tasks: {decision.reason}.")
        failures = decision.state.failures
        if failures and failures % METRIC_FAILURE_EVENT_AFTER == 0:
            self.events.add(
                service.name, f"queue metrics unavailable for {failures} consecutive reads: holding {current} tasks."
            )

    def _mean_job_seconds(self, service: Service) -> float | None:
        values = [t.last_health.get("mean_job_seconds") for t in self._alive(service) if t.last_health]
        values = [v for v in values if isinstance(v, (int, float)) and v > 0]
        return sum(values) / len(values) if values else None

    # --- reconciliation ----------------------------------------------------------------------

    def _alive(self, service: Service) -> list[Task]:
        return [t for t in self.tasks.values() if t.service == service.name and t.alive and t.desired_status == RUNNING]

    def _healthy(self, task: Task) -> bool:
        if task.state != RUNNING:
            return False
        taskdef = self.registry.get(task.taskdef)
        return task.health == HEALTHY or (taskdef.main_container.health_check is None)

    async def _reconcile(self, service: Service, now: float) -> None:
        primary = service.primary
        self._check_rollout_failure(service)
        primary = service.primary
        alive = self._alive(service)
        new = [t for t in alive if t.taskdef == primary.taskdef]
        old = [t for t in alive if t.taskdef != primary.taskdef]
        want = service.desired_count
        dc = service.config.deployment
        max_total = max(want, want * dc.maximum_percent // 100)
        min_healthy = math.ceil(want * dc.minimum_healthy_percent / 100)

        # Start what the primary deployment lacks, within maximumPercent and the crash backoff.
        to_start = min(want - len(new), max_total - len(alive))
        if to_start > 0 and service.throttle_for(primary.taskdef).may_launch(now):
            taskdef = self.registry.get(primary.taskdef)
            started = [
                await self._launch(taskdef, service=service.name, group=f"service:{service.name}")
                for _ in range(to_start)
            ]
            ids = ", ".join(t.task_id[:8] for t in started)
            self.events.add(service.name, f"has started {len(started)} tasks: (task {ids}).")

        # Replace old-revision tasks without dropping below minimumHealthyPercent.
        healthy = sum(1 for t in self._alive(service) if self._healthy(t))
        for task in sorted(old, key=lambda t: (self._healthy(t), (t.in_flight or 0) > 0)):
            if not self._healthy(task):
                self._begin_stop(task, f"Deployment {primary.deployment_id} replaced this task")
            elif healthy - 1 >= min_healthy:
                self._begin_stop(task, f"Deployment {primary.deployment_id} replaced this task")
                healthy -= 1

        # Scale in: idle tasks first, then the youngest.
        surplus = len(new) - want
        if surplus > 0:
            victims = sorted(new, key=lambda t: ((t.in_flight or 0) > 0, t.state == RUNNING, -(t.started_at or 0)))[
                :surplus
            ]
            for task in victims:
                self._begin_stop(task, f"Scaling activity initiated by (service {service.name})")
            self.events.add(
                service.name,
                f"has begun draining {len(victims)} tasks: (task {', '.join(t.task_id[:8] for t in victims)}).",
            )

        self._update_rollout(service)

    def _update_rollout(self, service: Service) -> None:
        primary = service.primary
        alive = self._alive(service)
        old_left = [t for t in alive if t.taskdef != primary.taskdef]
        stopping_old = [
            t
            for t in self.tasks.values()
            if t.service == service.name and t.state == STOPPING and t.taskdef != primary.taskdef
        ]
        healthy_new = sum(1 for t in alive if t.taskdef == primary.taskdef and self._healthy(t))
        if not old_left and not stopping_old:
            for d in service.deployments:
                if d.status == "ACTIVE":
                    d.status = "INACTIVE"
        if primary.rollout_state == "IN_PROGRESS" and not old_left and healthy_new >= service.desired_count:
            primary.rollout_state = "COMPLETED"
            self.events.add(service.name, f"deployment {primary.deployment_id} ({primary.taskdef}) completed.")
        steady = (
            primary.rollout_state == "COMPLETED"
            and not old_left
            and len(alive) == service.desired_count
            and healthy_new == service.desired_count
        )
        if steady and not service.steady:
            self.events.add(service.name, "has reached a steady state.")
        service.steady = steady
        service.deployments = [d for d in service.deployments if d.status != "INACTIVE"][-5:] or service.deployments[
            -1:
        ]

    def _check_rollout_failure(self, service: Service) -> None:
        primary = service.primary
        threshold = service.config.deployment.failure_threshold
        if primary.rollout_state != "IN_PROGRESS" or primary.failed_tasks < threshold:
            return
        previous = next(
            (d for d in reversed(service.deployments) if d is not primary and d.rollout_state == "COMPLETED"), None
        )
        primary.rollout_state = "FAILED"
        if not service.config.deployment.rollback or previous is None:
            self.events.add(
                service.name,
                f"deployment {primary.deployment_id} ({primary.taskdef}) failed: {primary.failed_tasks} tasks failed to start or become healthy; no revision to roll back to, still retrying.",
            )
            primary.rollout_state = "IN_PROGRESS"
            primary.failed_tasks = 0
            return
        primary.status = "ACTIVE"
        rollback = Deployment.new(previous.taskdef, f"rollback of {primary.taskdef}")
        previous.status = "INACTIVE"
        service.deployments.append(rollback)
        self.events.add(
            service.name,
            f"deployment {primary.deployment_id} ({primary.taskdef}) failed: {primary.failed_tasks} tasks failed to start or become healthy. Rolling back to {previous.taskdef}.",
        )

    # --- tasks -------------------------------------------------------------------------------

    def _task_env(
        self, task: Task, taskdef: TaskDefinition, ports: dict[int, int], overrides: dict[str, str]
    ) -> dict[str, str]:
        env = dict(taskdef.main_container.resolved(ports).environment)
        env.update(self.task_env)
        env.update(overrides)
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

    async def _launch(
        self, taskdef: TaskDefinition, *, service: str | None, group: str, overrides: dict[str, str] | None = None
    ) -> Task:
        task_id = uuid.uuid4().hex
        token = self.vault.register(task_id, self.role_arn(taskdef.task_role_arn))
        task = Task(task_id=task_id, taskdef=taskdef.key, service=service, group=group, token=token)
        task.handle = {"overrides": overrides or {}}
        self.tasks[task_id] = task
        container = taskdef.main_container
        spec = LaunchSpec(
            task_id=task_id,
            cluster=self.cluster,
            service=service,
            family=taskdef.family,
            revision=taskdef.revision,
            command=tuple(container.command),
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
            handle = await self.runtime.start(spec, lambda ports: self._task_env(task, taskdef, ports, overrides or {}))
        except Exception as exc:
            log.warning("could not start %s: %s", taskdef.key, exc)
            self._stopped(task, None, f"CannotStartContainerError: {exc}")
            return task
        task.handle = {**handle, "overrides": overrides or {}}
        task.state, task.started_at = RUNNING, self.clock()
        self.metrics.task_starts.labels(group).inc()
        self._watch(task)
        self._save()
        return task

    def _watch(self, task: Task) -> None:
        self._watchers[task.task_id] = asyncio.create_task(self._supervise(task))

    async def _supervise(self, task: Task) -> None:
        taskdef = self.registry.get(task.taskdef)
        health = asyncio.create_task(self._health_loop(task, taskdef)) if taskdef.main_container.health_check else None
        try:
            code = await self.runtime.wait(task.handle)
        finally:
            if health:
                health.cancel()
        if task.state != STOPPED:
            self._stopped(task, code, task.stop_reason or f"Essential container in task exited (exit code {code})")

    async def _health_loop(self, task: Task, taskdef: TaskDefinition) -> None:
        ports = self.runtime.port_bindings(task.handle)
        check = taskdef.main_container.resolved(ports).health_check
        assert check is not None
        command = tuple(check.command)
        env = self._task_env(task, taskdef, ports, task.handle.get("overrides", {}))
        while task.state == RUNNING:
            # Until the first success, look often; then at the task definition's interval.
            await asyncio.sleep(check.interval if task.health == HEALTHY else min(1.0, check.interval))
            if task.state != RUNNING:
                return
            result = await self.runtime.health_check(task.handle, command, env, check.timeout)
            with suppress(ValueError):
                parsed = json.loads(result.output.strip().splitlines()[-1]) if result.output.strip() else None
                if isinstance(parsed, dict):
                    task.last_health = parsed
            if result.healthy:
                task.health_failures = 0
                if task.health != HEALTHY:
                    task.health, task.healthy_at = HEALTHY, self.clock()
                    self._mark_started(task)
                    self._wake.set()
                continue
            if self.clock() - (task.started_at or 0) < check.start_period and task.health != HEALTHY:
                continue  # failures during the start period do not count
            task.health_failures += 1
            if task.health_failures >= check.retries:
                task.health = UNHEALTHY
                self._begin_stop(task, f"Task failed container health checks: {result.output.strip()[-200:]}")
                return

    def _begin_stop(self, task: Task, reason: str) -> None:
        if task.state in (STOPPING, STOPPED):
            return
        task.desired_status, task.state, task.stopping_at, task.stop_reason = STOPPED, STOPPING, self.clock(), reason
        asyncio.create_task(self._stop_task(task, reason))

    async def _stop_task(self, task: Task, reason: str) -> None:
        task.desired_status = STOPPED
        task.stop_reason = task.stop_reason or reason
        if task.state == STOPPED:
            return
        task.state = STOPPING
        task.stopping_at = task.stopping_at or self.clock()
        if not task.handle.get("pid") and not task.handle.get("container_id"):
            self._stopped(task, None, task.stop_reason)
            return
        timeout = self.registry.get(task.taskdef).main_container.stop_timeout
        code = await self.runtime.stop(task.handle, timeout)
        self._stopped(task, code, task.stop_reason)

    def _stopped(self, task: Task, code: int | None, reason: str) -> None:
        if task.state == STOPPED:
            return
        now = self.clock()
        expected = task.desired_status == STOPPED
        never_healthy = task.healthy_at is None
        task.state, task.desired_status, task.stopped_at = STOPPED, STOPPED, now
        task.exit_code = code if task.exit_code is None else task.exit_code
        task.stop_reason = reason
        self.vault.revoke(task.task_id)
        self.metrics.task_stops.labels(task.group, "requested" if expected else "exited").inc()
        service = self.services.get(task.service or "")
        if service is not None:
            self.events.add(service.name, f"has stopped 1 running tasks: (task {task.task_id[:8]}). Reason: {reason}.")
            unhealthy_stop = task.health == UNHEALTHY
            if (
                (not expected or unhealthy_stop)
                and task.taskdef == service.primary.taskdef
                and (never_healthy or unhealthy_stop)
            ):
                service.primary.failed_tasks += 1
            if not expected or unhealthy_stop:
                self._throttle(service, task, now)
        elif task.group.startswith("run-task"):
            self.events.add(None, f"run-task {task.task_id[:8]} ({task.taskdef}) stopped: {reason} (exit code {code}).")
        self._prune()
        self._save()
        self._wake.set()

    def _became_healthy(self, task: Task, now: float) -> bool:
        """Did this task start fine? Healthy once, or (without a health check) running for a while."""
        if task.healthy_at is not None:
            return True
        has_check = self.registry.get(task.taskdef).main_container.health_check is not None
        return not has_check and task.started_at is not None and now - task.started_at >= STABLE_AFTER

    def _mark_started(self, task: Task) -> None:
        service = self.services.get(task.service or "")
        if service is not None and task.taskdef in service.throttle:
            service.throttle[task.taskdef] = task_healthy(service.throttle[task.taskdef])

    def _throttle(self, service: Service, task: Task, now: float) -> None:
        """A task stopped unasked: count it towards its revision's launch throttle if it never started fine."""
        healthy = self._became_healthy(task, now)
        state = task_stopped(self.throttle_policy, service.throttle_for(task.taskdef), became_healthy=healthy, now=now)
        service.throttle[task.taskdef] = state
        delay = state.next_launch_at - now
        if delay > 0:
            ran = now - (task.started_at or now)
            self.events.add(
                service.name,
                f"task {task.task_id[:8]} ({task.taskdef}) stopped after {ran:.1f}s without becoming healthy "
                f"({state.failures} in a row); next start in {delay:.0f}s (launch throttle).",
            )

    def _prune(self, keep: int = 200) -> None:
        stopped = sorted((t for t in self.tasks.values() if t.state == STOPPED), key=lambda t: t.stopped_at or 0)
        for task in stopped[:-keep] if len(stopped) > keep else []:
            self.tasks.pop(task.task_id, None)
            self._watchers.pop(task.task_id, None)

    # --- operations (the HTTP API calls these) -------------------------------------------------

    def update_service(
        self,
        name: str,
        *,
        desired_count: int | None = None,
        minimum: int | None = None,
        maximum: int | None = None,
        task_definition: str | None = None,
    ) -> Service:
        service = self.services.get(name)
        if service is None:
            raise KeyError(f"no service {name!r}; services: {', '.join(self.services)}")
        if minimum is not None or maximum is not None:
            if service.scaling is None:
                raise ValueError(f"service {name!r} has no autoscaling policy")
            policy = replace(
                service.scaling,
                min=service.scaling.min if minimum is None else minimum,
                max=service.scaling.max if maximum is None else maximum,
            )
            if policy.problems():
                raise ValueError("; ".join(policy.problems()))
            service.scaling = policy
            clamped = max(policy.min, min(policy.max, service.desired_count))
            self.events.add(
                name,
                f"scaling limits changed to min {policy.min}, max {policy.max}; desired {service.desired_count} → {clamped}.",
            )
            service.desired_count = clamped
        if desired_count is not None:
            if desired_count < 0:
                raise ValueError("desiredCount must be >= 0")
            if service.scaling is not None:
                desired_count = max(service.scaling.min, min(service.scaling.max, desired_count))
            self.events.add(name, f"desired count set to {desired_count}.")
            service.desired_count = desired_count
        if task_definition is not None:
            taskdef = self.registry.get(task_definition)
            if taskdef.key != service.primary.taskdef:
                for d in service.deployments:
                    if d.status == "PRIMARY":
                        d.status = "ACTIVE"
                deployment = Deployment.new(taskdef.key, "service update")
                service.deployments.append(deployment)
                service.steady = False
                self.events.add(name, f"deployment {deployment.deployment_id} started: {taskdef.key}.")
        self._save()
        self._wake.set()
        return service

    async def run_task(self, ref: str, count: int = 1, overrides: dict[str, str] | None = None) -> list[Task]:
        """One-off tasks outside any service (batch mode): not replaced when they exit."""
        taskdef = self.registry.get(ref)
        tasks = [
            await self._launch(taskdef, service=None, group=f"run-task:{taskdef.family}", overrides=overrides)
            for _ in range(count)
        ]
        self.events.add(
            None, f"run-task started {count} task(s) of {taskdef.key}: {', '.join(t.task_id[:8] for t in tasks)}."
        )
        return tasks

    def kill_task(self, task_id: str) -> None:
        """SIGKILL a task (a failure drill, like `docker kill`)."""
        task = self.tasks[task_id]
        self.runtime.kill(task.handle)

    # --- state -------------------------------------------------------------------------------

    def _save(self) -> None:
        state = {
            "cluster": self.cluster,
            "services": [s.to_state() for s in self.services.values()],
            "tasks": [t.to_state() for t in self.tasks.values()],
        }
        tmp = self.state_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds task tokens
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
        tmp.replace(self.state_path)

    async def _restore(self) -> None:
        if not self.state_path.exists():
            await asyncio.gather(
                *(self.runtime.stop(s, 10) for s in await self.runtime.strays(set())), return_exceptions=True
            )
            self._save()
            return
        state = json.loads(self.state_path.read_text())
        for raw in state.get("services", []):
            service = self.services.get(raw["name"])
            if service is not None:
                service.restore(raw)
        adopted = lost = 0
        for raw in state.get("tasks", []):
            task = Task.from_state(raw)
            self.tasks[task.task_id] = task
            if task.state == STOPPED:
                continue
            if task.handle.get("pid") or task.handle.get("container_id"):
                alive = await self.runtime.alive(task.handle)
            else:
                alive = False
            if not alive:
                self._stopped(task, None, "Task stopped while the orchestrator was down")
                lost += 1
                continue
            taskdef = self.registry.get(task.taskdef)
            self.vault.register(task.task_id, self.role_arn(taskdef.task_role_arn), token=task.token)
            self._watch(task)
            if task.state == STOPPING:
                asyncio.create_task(self._stop_task(task, task.stop_reason or "stopping"))
            adopted += 1
        strays = await self.runtime.strays(set(self.tasks))
        # e.g. a container started just before a crash, never saved: stop and remove it.
        await asyncio.gather(*(self.runtime.stop(stray, 10) for stray in strays), return_exceptions=True)
        self.events.add(
            None,
            f"orchestrator started: adopted {adopted} running task(s), {lost} had stopped meanwhile"
            + (f", removed {len(strays)} unknown task(s)." if strays else "."),
        )

    # --- views -------------------------------------------------------------------------------

    def service_view(self, service: Service) -> dict[str, Any]:
        alive = self._alive(service)
        return {
            "serviceName": service.name,
            "taskDefinition": service.primary.taskdef,
            "desiredCount": service.desired_count,
            "runningCount": sum(1 for t in alive if t.state == RUNNING),
            "pendingCount": sum(1 for t in alive if t.state == PROVISIONING),
            "healthyCount": sum(1 for t in alive if self._healthy(t)),
            "stoppingCount": sum(1 for t in self.tasks.values() if t.service == service.name and t.state == STOPPING),
            "steady": service.steady,
            "autoScaling": None
            if service.scaling is None
            else {**scaling_to_json(service.scaling), "lastDecision": service.last_decision},
            "deployments": [
                {
                    "id": d.deployment_id,
                    "taskDefinition": d.taskdef,
                    "status": d.status,
                    "rolloutState": d.rollout_state,
                    "reason": d.reason,
                    "failedTasks": d.failed_tasks,
                    "createdAt": d.created_at,
                }
                for d in service.deployments
            ],
        }

    def status(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "queue": None if self.queue is None else {**vars(self.queue), "dead_letters": self.dead_letters},
            "services": [self.service_view(s) for s in self.services.values()],
            "tasks": [
                t.public()
                for t in sorted(self.tasks.values(), key=lambda t: t.created_at, reverse=True)
                if t.state != STOPPED
            ][:200],
        }
