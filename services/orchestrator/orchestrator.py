"""The control plane: keeps every service at its desired count, scales workers from queue depth,
rolls deployments forward (or back), and hands each task its own role.

One loop, once per ``tick_interval`` (and at once when a task stops or becomes healthy):

1. observe the queue (one metric read) and, for services with a scaling policy,
   turn it into a desired count with :func:`scaling.decide` (a pure function);
2. reconcile every service with :func:`planner.plan` (a pure function): trip the
   deployment circuit breaker (roll back), start what the primary deployment lacks
   within ``maximumPercent`` and the launch throttle, stop old-revision tasks within
   ``minimumHealthyPercent`` and surplus ones (idle first), and record ECS-style
   service events.

The parts: :mod:`supervisor` runs each task (launch, watch, health checks, stop),
:mod:`state` saves everything to ``state.json`` after each change so a restarted
orchestrator adopts the tasks still running, :mod:`throttle` slows down revisions
whose tasks keep failing to start. This module decides and keeps the books.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

from services.orchestrator.capacity import Resources, placeable, reserved
from services.orchestrator.credentials import CredentialVault
from services.orchestrator.metric_sources import MetricSource
from services.orchestrator.metrics import OrchestratorMetrics
from services.orchestrator.model import (
    DeploymentConfig,
    Deployment,
    DeploymentStatus,
    EventLog,
    HealthStatus,
    LoadBalancerRef,
    RolloutState,
    Service,
    ServiceConfig,
    Task,
    TaskState,
)
from services.orchestrator.planner import DeploymentView, Plan, ServiceSnapshot, TaskView, Verdict, plan
from services.orchestrator.runtime import Runtime
from services.orchestrator.scaling import Decision, QueueMetrics, ScalingPolicy, decide
from services.orchestrator.state import StateStore
from services.orchestrator.supervisor import Sleep, TaskSupervisor
from services.orchestrator.targets import LoadBalancerDriver, TargetRegistrar
from services.orchestrator.taskdefs import TaskDefinitionRegistry
from services.orchestrator.throttle import ThrottlePolicy, task_healthy, task_stopped

log = logging.getLogger("pixfleet.orchestrator")

STABLE_AFTER = 10.0  # a task without a health check that ran this long started fine
METRIC_FAILURE_EVENT_AFTER = 5
FAILED_SHOWN_FOR = 10.0  # a deployment the circuit breaker failed stays visible this long after the rollback
DEFAULT_THROTTLE = ThrottlePolicy()

# Told every scaler tick of a service: (service, its count before the tick, the decision).
ScalingListener = Callable[[Service, int, Decision], None]


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
        sleep: Sleep = asyncio.sleep,
        throttle_policy: ThrottlePolicy = DEFAULT_THROTTLE,
        capacity: Resources | None = None,
        load_balancer: LoadBalancerDriver | None = None,
    ):
        self.cluster = cluster
        self.registry = registry
        self.runtime = runtime
        self.vault = vault
        self.metric_source = metric_source
        self.state_dir = state_dir
        self.store = StateStore(state_dir / "state.json")
        self.tick_interval = tick_interval
        self.clock = clock
        self.throttle_policy = throttle_policy
        self.capacity = capacity  # the container instance's registered resources; None: unlimited
        self.events = EventLog(state_dir / "events.jsonl")
        self.metrics = OrchestratorMetrics.create()
        bindings = {c.name: c.load_balancers for c in services}
        self.load_balancer = load_balancer
        self.targets = TargetRegistrar(load_balancer, bindings) if load_balancer is not None else None
        self.vault.on_refresh = lambda task_id: self.metrics.refreshes.inc()
        self.supervisor = TaskSupervisor(
            cluster=cluster,
            runtime=runtime,
            registry=registry,
            vault=vault,
            role_arn=role_arn,
            task_env=task_env,
            endpoint_url=endpoint_url,
            listener=self,
            clock=clock,
            sleep=sleep,
            before_stop=self.targets.drain if self.targets is not None else None,
        )
        self.tasks: dict[str, Task] = self.supervisor.tasks
        self.services: dict[str, Service] = {}
        for config in services:
            self.services[config.name] = self._new_service(config)
        self.scaling_listeners: list[ScalingListener] = []  # e.g. Application Auto Scaling's activities
        self.queue: QueueMetrics | None = None
        self.dead_letters: int | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.last_tick: float = 0.0

    def _new_service(self, config: ServiceConfig) -> Service:
        taskdef = self.registry.get(config.task_definition)
        desired = config.desired_count
        if config.scaling:
            desired = max(config.scaling.min, min(config.scaling.max, desired))
        return Service(
            config=config,
            desired_count=desired,
            deployments=[Deployment.new(taskdef.key, "service created")],
            scaling=config.scaling,
        )

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load saved state (adopting live tasks), then start the control loop."""
        await self.restore()
        self._loop_task = asyncio.create_task(self._loop(), name="control loop")

    async def close(self, *, stop_tasks: bool = True) -> None:
        """Stop the loop; stop every task (or leave them running for a successor to adopt)."""
        if self._loop_task:
            self._loop_task.cancel()
            with suppress(asyncio.CancelledError):
                await self._loop_task
        stopped = await self.supervisor.close(stop_tasks=stop_tasks)
        if self.targets is not None:  # left running: the targets stay registered for the next orchestrator
            await self.targets.close(wait=stop_tasks)
        if stop_tasks:
            # A start the cancelled loop was waiting on may still have made a container: remove it too.
            strays = await self.runtime.strays(set())
            await asyncio.gather(*(self.runtime.stop(stray, 5) for stray in strays), return_exceptions=True)
            self.events.add(None, f"orchestrator stopped {stopped} task(s) on shutdown")
        else:
            self.events.add(None, "orchestrator exiting; tasks left running for the next orchestrator to adopt")
        self.save()

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

    async def restore(self) -> None:
        """Adopt the tasks ``state.json`` lists that are still running; stop the runtime's unknown ones."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        saved = self.store.load()
        if saved is None:
            await asyncio.gather(
                *(self.runtime.stop(s, 10) for s in await self.runtime.strays(set())), return_exceptions=True
            )
            self.save()
            return
        for name, raw in saved.services.items():
            service = self.services.get(name)
            if service is not None:
                service.restore(raw)
        adopted = lost = 0
        by_service: dict[str, list[int]] = {}  # service → [adopted, lost]
        for task in saved.tasks:
            self.tasks[task.task_id] = task
            if task.state == TaskState.STOPPED:
                continue
            counts = by_service.setdefault(task.service or "", [0, 0])
            if task.handle is None or not await self.runtime.alive(task.handle):
                self.supervisor.stopped(task, None, "Task stopped while the orchestrator was down")
                lost += 1
                counts[1] += 1
                continue
            self.supervisor.adopt(task)
            adopted += 1
            counts[0] += 1
        for name, (mine, gone) in by_service.items():
            if name in self.services:  # DescribeServices shows it: the restart, in the service's own events
                self.events.add(
                    name, f"the control plane restarted: adopted {mine} running task(s), {gone} had stopped meanwhile."
                )
        strays = await self.runtime.strays(set(self.tasks))
        # e.g. a container started just before a crash, never saved: stop and remove it.
        await asyncio.gather(*(self.runtime.stop(stray, 10) for stray in strays), return_exceptions=True)
        self.events.add(
            None,
            f"orchestrator started: adopted {adopted} running task(s), {lost} had stopped meanwhile"
            + (f", removed {len(strays)} unknown task(s)." if strays else "."),
        )

    def save(self) -> None:
        self.store.save(self.cluster, self.services.values(), self.tasks.values())

    # --- one tick ----------------------------------------------------------------------------

    async def tick(self) -> None:
        now = self.clock()
        self.last_tick = now
        await self._observe()
        if self.targets is not None:
            await self.targets.sync(self.tasks.values(), self._container_healthy)
        for service in self.services.values():
            self._autoscale(service, now)
            await self._reconcile(service, now)
            self.metrics.desired.labels(service.name).set(service.desired_count)
            self.metrics.running.labels(service.name).set(len(self.alive_tasks(service)))
        self.save()

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
        for listener in self.scaling_listeners:
            listener(service, current, decision)
        failures = decision.state.failures
        if failures and failures % METRIC_FAILURE_EVENT_AFTER == 0:
            self.events.add(
                service.name, f"queue metrics unavailable for {failures} consecutive reads: holding {current} tasks."
            )

    def _mean_job_seconds(self, service: Service) -> float | None:
        measured = [t.last_health.get("mean_job_seconds") for t in self.alive_tasks(service) if t.last_health]
        values = [v for v in measured if isinstance(v, (int, float)) and v > 0]
        return sum(values) / len(values) if values else None

    # --- reconciliation ----------------------------------------------------------------------

    def alive_tasks(self, service: Service) -> list[Task]:
        """The service's PROVISIONING or RUNNING tasks that nobody asked to stop."""
        return [
            t
            for t in self.tasks.values()
            if t.service == service.name and t.alive and t.desired_status == TaskState.RUNNING
        ]

    def is_healthy(self, task: Task) -> bool:
        """RUNNING and passing its health check (or RUNNING, when its task definition has none); and, behind
        a load balancer, healthy in its target groups (ECS's rule)."""
        return self._container_healthy(task) and self._in_service(task)

    def _container_healthy(self, task: Task) -> bool:
        return task.state == TaskState.RUNNING and (task.health == HealthStatus.HEALTHY or not self._has_check(task))

    def _in_service(self, task: Task) -> bool:
        return self.targets is None or not self.targets.balanced(task) or self.targets.in_service(task)

    def load_balancer_problems(self, refs: Iterable[LoadBalancerRef]) -> list[str]:
        """What is wrong with a service's ``loadBalancers`` here: no load balancer, or an unknown target group."""
        refs = list(refs)
        if not refs:
            return []
        if self.load_balancer is None:
            return ["this control plane has no load balancer (start the stack with haproxy installed)"]
        problems = []
        for ref in refs:
            try:
                self.load_balancer.registered(ref.target_group_arn)
            except LookupError:
                problems.append(f"target group {ref.target_group_arn} does not exist")
        return problems

    def load_balancers(self, service: str) -> list[dict[str, Any]]:
        """A service's ``loadBalancers`` with its targets' health (DescribeServices / DescribeTargetHealth)."""
        return [] if self.targets is None else self.targets.describe(service)

    def _has_check(self, task: Task) -> bool:
        return self.registry.get(task.taskdef).main_container.health_check is not None

    def _snapshot(self, service: Service, now: float) -> ServiceSnapshot:
        return ServiceSnapshot(
            name=service.name,
            desired=service.desired_count,
            config=service.config.deployment,
            deployments=tuple(
                DeploymentView(d.deployment_id, d.taskdef, d.status, d.rollout_state, d.failed_tasks)
                for d in service.deployments
            ),
            tasks=tuple(
                TaskView(
                    task_id=t.task_id,
                    revision=t.taskdef,
                    state=t.state,
                    health=t.health if self._in_service(t) else HealthStatus.UNKNOWN,
                    health_check=self._has_check(t) or not self._in_service(t),
                    desired_status=t.desired_status,
                    in_flight=t.in_flight,
                    started_at=t.started_at,
                )
                for t in self.tasks.values()
                if t.service == service.name and t.state != TaskState.STOPPED
            ),
            throttle=dict(service.throttle),
            now=now,
            steady=service.steady,
        )

    async def _reconcile(self, service: Service, now: float) -> None:
        """Plan, act, and plan again after each change, so every step sees what the last one did."""
        decision = plan(self._snapshot(service, now))
        if decision.breaker_tripped:
            self._trip_breaker(service, decision)
            decision = plan(self._snapshot(service, now))
        if decision.start:
            taskdef = self.registry.get(decision.revision)
            count, unplaced = self.placement(Resources(taskdef.cpu, taskdef.memory), decision.start)
            self._note_placement(service, unplaced)
            started = [
                await self.supervisor.launch(taskdef, service=service.name, group=f"service:{service.name}")
                for _ in range(count)
            ]
            if started:
                ids = ", ".join(t.task_id[:8] for t in started)
                self.events.add(service.name, f"has started {len(started)} tasks: (task {ids}).")
                decision = plan(self._snapshot(service, now))  # the stops see the tasks just started
                if decision.breaker_tripped:
                    return  # launches just failed the deployment: the next tick trips the breaker, stopping nothing
        for stop in decision.stop:
            self.supervisor.begin_stop(self.tasks[stop.task_id], stop.reason)
        self._record(service, decision, now)

    def reserved(self) -> Resources:
        """What the tasks not yet STOPPED reserve on the instance (a stopping task still holds its share)."""
        defs = [self.registry.get(t.taskdef) for t in self.tasks.values() if t.state != TaskState.STOPPED]
        return reserved(Resources(d.cpu, d.memory) for d in defs)

    def placement(self, wanted: Resources, count: int) -> tuple[int, str | None]:
        """How many tasks needing ``wanted`` each fit now, and ECS's reason (``RESOURCE:…``) for the rest."""
        if self.capacity is None:
            return count, None
        return placeable(self.capacity - self.reserved(), wanted, count)

    def _note_placement(self, service: Service, unplaced: str | None) -> None:
        """One service event when placement starts failing (and for each new reason), as ECS writes it."""
        if unplaced is not None and unplaced != service.unplaced:
            what = "memory" if unplaced == "RESOURCE:MEMORY" else "CPU"
            self.events.add(
                service.name,
                "was unable to place a task because no container instance met all of its requirements. "
                f"The closest matching container-instance has insufficient {what} available ({unplaced}); "
                f"{len(self.alive_tasks(service))} of {service.desired_count} tasks run.",
            )
        service.unplaced = unplaced

    def _trip_breaker(self, service: Service, decision: Plan) -> None:
        primary = service.primary
        self.events.add(service.name, decision.events[0])
        if decision.verdict == Verdict.FAILED:  # nothing to roll back to: try the revision again
            primary.failed_tasks = 0
            return
        assert decision.rollback_to is not None
        primary.status, primary.rollout_state = DeploymentStatus.ACTIVE, RolloutState.FAILED
        previous = next(d for d in service.deployments if d.deployment_id == decision.rollback_to.deployment_id)
        previous.status = DeploymentStatus.INACTIVE
        service.deployments.append(Deployment.new(previous.taskdef, f"rollback of {primary.taskdef}"))

    def _record(self, service: Service, decision: Plan, now: float) -> None:
        """The plan's bookkeeping: events, the rollout state, retired deployments, steadiness."""
        for message in decision.events:
            self.events.add(service.name, message)
        if decision.retire_active:
            for d in service.deployments:
                if d.status == DeploymentStatus.ACTIVE:
                    d.status = DeploymentStatus.INACTIVE
        if decision.verdict == Verdict.COMPLETED:
            service.primary.rollout_state = RolloutState.COMPLETED
        service.steady = decision.steady
        shown = {d.deployment_id for d, _ in service.failed_recently}
        service.failed_recently.extend(
            (d, now)
            for d in service.deployments
            if d.status == DeploymentStatus.INACTIVE
            and d.rollout_state == RolloutState.FAILED
            and d.deployment_id not in shown
        )
        if service.primary.rollout_state == RolloutState.COMPLETED:
            service.failed_recently = [(d, at) for d, at in service.failed_recently if now - at < FAILED_SHOWN_FOR]
        kept = [d for d in service.deployments if d.status != DeploymentStatus.INACTIVE][-5:]
        service.deployments = kept or service.deployments[-1:]

    # --- what the supervisor reports -----------------------------------------------------------

    def task_started(self, task: Task) -> None:
        self.metrics.task_starts.labels(task.group).inc()
        self.save()

    def task_healthy(self, task: Task) -> None:
        service = self.services.get(task.service or "")
        if service is not None and task.taskdef in service.throttle:
            service.throttle[task.taskdef] = task_healthy(service.throttle[task.taskdef])
        self._wake.set()

    def task_stopped(self, task: Task, *, requested: bool) -> None:
        """Count a failed start towards the circuit breaker and the launch throttle; record the event."""
        now = task.stopped_at or self.clock()
        reason = task.stop_reason
        self.metrics.task_stops.labels(task.group, "requested" if requested else "exited").inc()
        service = self.services.get(task.service or "")
        if service is not None:
            self.events.add(service.name, f"has stopped 1 running tasks: (task {task.task_id[:8]}). Reason: {reason}.")
            unhealthy = task.health == HealthStatus.UNHEALTHY
            never_healthy = task.healthy_at is None
            if (
                (not requested or unhealthy)
                and task.taskdef == service.primary.taskdef
                and (never_healthy or unhealthy)
            ):
                service.primary.failed_tasks += 1
            if not requested or unhealthy:
                self._throttle(service, task, now)
        elif task.service is None:
            self.events.add(
                None, f"run-task {task.task_id[:8]} ({task.taskdef}) stopped: {reason} (exit code {task.exit_code})."
            )
        self.supervisor.prune()
        self.save()
        self._wake.set()

    def _became_healthy(self, task: Task, now: float) -> bool:
        """Did this task start fine? Healthy once, or (without a health check) running for a while."""
        if task.healthy_at is not None:
            return True
        return not self._has_check(task) and task.started_at is not None and now - task.started_at >= STABLE_AFTER

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

    # --- operations (the HTTP API calls these) -------------------------------------------------

    def update_service(
        self,
        name: str,
        *,
        desired_count: int | None = None,
        task_definition: str | None = None,
        deployment: DeploymentConfig | None = None,
        force_new_deployment: bool = False,
    ) -> Service:
        """UpdateService: desired count (clamped into the scaling limits), deployment configuration, revision."""
        service = self.services.get(name)
        if service is None:
            raise KeyError(f"no service {name!r}; services: {', '.join(self.services)}")
        if desired_count is not None:
            if desired_count < 0:
                raise ValueError("desiredCount must be >= 0")
            if service.scaling is not None:
                desired_count = max(service.scaling.min, min(service.scaling.max, desired_count))
            self.events.add(name, f"desired count set to {desired_count}.")
            service.desired_count = desired_count
        if deployment is not None and deployment != service.config.deployment:
            service.config = replace(service.config, deployment=deployment)
            self.events.add(name, "deployment configuration updated.")
        if task_definition is not None or force_new_deployment:
            taskdef = self.registry.get(task_definition or service.primary.taskdef)
            if taskdef.key != service.primary.taskdef or force_new_deployment:
                for d in service.deployments:
                    if d.status == DeploymentStatus.PRIMARY:
                        d.status = DeploymentStatus.ACTIVE
                started = Deployment.new(taskdef.key, "service update")
                service.deployments.append(started)
                service.steady = False
                self.events.add(name, f"deployment {started.deployment_id} started: {taskdef.key}.")
        self.save()
        self._wake.set()
        return service

    def set_scaling(self, name: str, policy: ScalingPolicy | None, why: str) -> Service:
        """Replace a service's scaling policy at run time (Application Auto Scaling's calls). The count is
        clamped into the new limits at once; ``None`` turns the scaler off and the count holds."""
        service = self.services.get(name)
        if service is None:
            raise KeyError(f"no service {name!r}; services: {', '.join(self.services)}")
        service.scaling = policy
        if policy is None:
            service.last_decision = ""
            self.events.add(name, f"{why}; the scaler is off, desired count stays {service.desired_count}.")
        else:
            clamped = max(policy.min, min(policy.max, service.desired_count))
            self.events.add(
                name, f"{why}; min {policy.min}, max {policy.max}, desired {service.desired_count} → {clamped}."
            )
            service.desired_count = clamped
        self.save()
        self._wake.set()
        return service

    def add_service(self, config: ServiceConfig, *, announce: bool = True) -> Service:
        """A new service (CreateService); ``ValueError`` when the name is taken.

        ``announce=False`` re-creates a saved one before :meth:`start` (no event, nothing saved yet: the
        restore that follows fills in its deployments and desired count).
        """
        if config.name in self.services:
            raise ValueError(f"service {config.name!r} already exists")
        service = self.services[config.name] = self._new_service(config)
        if self.targets is not None:
            self.targets.bind(config.name, config.load_balancers)
        if announce:
            self.events.add(config.name, f"created with {config.task_definition}, desired {service.desired_count}.")
            self.save()
            self._wake.set()
        return service

    def remove_service(self, name: str) -> Service:
        """Forget a service (DeleteService, once its tasks stopped); ``KeyError`` for an unknown one."""
        service = self.services.pop(name)
        if self.targets is not None:
            self.targets.bind(name, ())
        self.save()
        return service

    async def run_task(
        self,
        ref: str,
        count: int = 1,
        overrides: dict[str, str] | None = None,
        *,
        command: list[str] | None = None,
        started_by: str | None = None,
        group: str | None = None,
    ) -> list[Task]:
        """One-off tasks outside any service (batch mode): not replaced when they exit."""
        taskdef = self.registry.get(ref)
        tasks = [
            await self.supervisor.launch(
                taskdef,
                service=None,
                group=group or f"run-task:{taskdef.family}",
                overrides=overrides,
                command=command,
                started_by=started_by,
            )
            for _ in range(count)
        ]
        self.events.add(
            None, f"run-task started {count} task(s) of {taskdef.key}: {', '.join(t.task_id[:8] for t in tasks)}."
        )
        return tasks

    def kill_task(self, task_id: str) -> None:
        """SIGKILL a task (a failure drill, like `docker kill`). ``KeyError`` for an unknown task."""
        self.supervisor.kill(self.tasks[task_id])
