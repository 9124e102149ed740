"""Tasks as load balancer targets: ECS's side of ``loadBalancers`` (register, drain, deregister).

A service whose config names ``loadBalancers`` (``targetGroupArn``, ``containerName``,
``containerPort``) has each of its tasks registered in those target groups, under its
task id, at the address its runtime gave that container port
(:func:`~services.orchestrator.runtime.target_address`: loopback and the dynamic host
port for a process, the container's own IP for a container).

What is guaranteed:

* a task is registered once it is RUNNING, wanted RUNNING and healthy by its own
  health check (:func:`target_changes`, a pure function, decides every tick);
* before the runtime stops a task (scale-in, a rolling deploy, a shutdown) it is
  deregistered with its group's deregistration delay (:meth:`TargetRegistrar.drain`,
  the supervisor's ``before_stop``): no new requests, in-flight ones finish, then the
  SIGTERM. A task that stopped on its own (killed, crashed) is deregistered at the next
  tick; until then the load balancer's own health check takes it out, and requests whose
  connection fails are retried on another target (see :mod:`.lb.config`);
* as in ECS, a task of such a service counts as healthy for the rollout planner only
  when it is *in service*: healthy in every one of its target groups
  (:meth:`TargetRegistrar.in_service`). A rolling deploy therefore never stops an old
  task before its replacement gets traffic.

The shipped target group (``infra/ecs/loadbalancing.json``) checks the API's ``/healthz``
and accepts 200 *and* 503: a 503 there means S3 or SQS is down, not the task, and the
task keeps answering clients with its own classified 503 and ``Retry-After``; taking every
target out would only turn that into HAProxy's bare 503 (ALB fails open in that case,
HAProxy does not). Its timeout (6 s) is above the API's own AWS timeout (5 s) for the
same reason; a task that does not answer at all is out after 2 × 7 s.

Target health is read once per tick and kept (:meth:`TargetRegistrar.describe`), so the
API's views stay synchronous; a failed read keeps the last answer and says so (the
planner never acts on a load balancer it cannot see, as the scaler holds on a failed
metric read).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any, Protocol

from services.orchestrator.lb.haproxy import TargetHealth
from services.orchestrator.lb.spec import target_group_name
from services.orchestrator.model import LoadBalancerRef, Task, TaskState
from services.orchestrator.runtime import target_address

log = logging.getLogger("pixfleet.orchestrator.targets")


class LoadBalancerDriver(Protocol):
    """What the orchestrator needs of a load balancer (:class:`~.lb.haproxy.HAProxyLoadBalancer` has it)."""

    async def register(self, target_group: str, target_id: str, host: str, port: int) -> None: ...

    async def deregister(self, target_group: str, target_id: str, drain_seconds: float | None = None) -> None: ...

    async def target_health(self, target_group: str) -> list[TargetHealth]: ...

    def registered(self, target_group: str) -> dict[str, tuple[str, int]]: ...


# --- the decision (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One task of a service, as the registration decision sees it."""

    task_id: str
    running: bool  # RUNNING, and nobody asked it to stop
    healthy: bool  # its own health check passed (or its task definition has none)
    address: tuple[str, int] | None  # where the container port is reached; None: not mapped


@dataclass(frozen=True)
class TargetChanges:
    register: tuple[tuple[str, str, int], ...] = ()  # (task id, host, port)
    deregister: tuple[str, ...] = ()  # task ids


def target_changes(
    candidates: Sequence[Candidate], registered: Mapping[str, tuple[str, int]], draining: Set[str] = frozenset()
) -> TargetChanges:
    """Which tasks one target group should gain and lose.

    Registered: running, healthy tasks with an address, unless already registered there
    (a new address is a new registration: the load balancer moves the target). Deregistered:
    targets that are no such task any more (stopping, stopped, unhealthy, unknown after a
    restart). Targets being drained already are left to that drain.
    """
    wanted = {c.task_id: c.address for c in candidates if c.running and c.healthy and c.address is not None}
    register = tuple(
        (task_id, *address)
        for task_id, address in sorted(wanted.items())
        if address is not None and task_id not in draining and registered.get(task_id) != address
    )
    deregister = tuple(sorted(t for t in registered if t not in wanted and t not in draining))
    return TargetChanges(register, deregister)


def candidate(task: Task, ref: LoadBalancerRef, healthy: bool) -> Candidate:
    """A task as a candidate target of ``ref``'s group."""
    address = target_address(task.handle, ref.container_port) if task.handle else None
    running = task.state == TaskState.RUNNING and task.desired_status == TaskState.RUNNING
    return Candidate(task.task_id, running, healthy, address)


# --- the bookkeeping --------------------------------------------------------------------------------


class TargetRegistrar:
    """Keeps the target groups of every load-balanced service in line with its tasks."""

    def __init__(self, driver: LoadBalancerDriver, bindings: Mapping[str, Sequence[LoadBalancerRef]]):
        self.driver = driver
        self.bindings = {service: tuple(refs) for service, refs in bindings.items() if refs}
        self._drains: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._health: dict[str, list[TargetHealth]] = {}
        self._errors: dict[str, str] = {}

    def bind(self, service: str, refs: Sequence[LoadBalancerRef]) -> None:
        """A service created (CreateService's ``loadBalancers``): its tasks become targets from the next tick."""
        if refs:
            self.bindings[service] = tuple(refs)
        else:
            self.bindings.pop(service, None)

    def target_of(self, task: Task) -> list[tuple[str, TargetHealth]]:
        """The task's target health in each of its service's groups (by the last read)."""
        found = []
        for group in self._groups_of(task):
            for health in self._health.get(group, []):
                if health["id"] == task.task_id:
                    found.append((group, health))
        return found

    def groups(self) -> list[str]:
        return sorted({target_group_name(r.target_group_arn) for refs in self.bindings.values() for r in refs})

    async def sync(self, tasks: Iterable[Task], healthy: Callable[[Task], bool]) -> None:
        """One tick: register and deregister what :func:`target_changes` says, then read target health."""
        tasks = list(tasks)
        for service, refs in self.bindings.items():
            mine = [t for t in tasks if t.service == service and t.state != TaskState.STOPPED]
            for ref in refs:
                group = target_group_name(ref.target_group_arn)
                draining = {task_id for g, task_id in self._drains if g == group}
                changes = target_changes(
                    [candidate(t, ref, healthy(t)) for t in mine], self.driver.registered(group), draining
                )
                for task_id, host, port in changes.register:
                    try:
                        await self.driver.register(group, task_id, host, port)
                    except Exception as exc:  # the next tick tries again
                        log.warning("cannot register task %s in %s: %s", task_id[:8], group, exc)
                for task_id in changes.deregister:
                    self._start_drain(group, task_id)
        await self.refresh()

    async def refresh(self) -> None:
        """Read every group's target health; a failed read keeps the last answer."""
        for group in self.groups():
            try:
                self._health[group] = await self.driver.target_health(group)
                self._errors.pop(group, None)
            except Exception as exc:
                self._errors[group] = str(exc)
                log.warning("target health of %s unavailable: %s", group, exc)

    def _start_drain(self, group: str, task_id: str) -> asyncio.Task[None]:
        key = (group, task_id)
        job = self._drains.get(key)
        if job is None:
            job = asyncio.create_task(self._deregister(group, task_id), name=f"deregister {task_id[:8]}")
            self._drains[key] = job
            job.add_done_callback(lambda done: self._drains.pop(key, None) if self._drains.get(key) is done else None)
        return job

    async def _deregister(self, group: str, task_id: str) -> None:
        try:
            await self.driver.deregister(group, task_id)
        except Exception as exc:
            log.warning("cannot deregister task %s from %s: %s", task_id[:8], group, exc)

    def drain(self, task: Task) -> Awaitable[Any]:
        """Deregister the task from every group it is a target of; done once all drains are."""
        jobs = [
            self._start_drain(group, task.task_id)
            for group in self._groups_of(task)
            if task.task_id in self.driver.registered(group)
        ]
        return asyncio.gather(*jobs)

    def _groups_of(self, task: Task) -> list[str]:
        return [target_group_name(r.target_group_arn) for r in self.bindings.get(task.service or "", ())]

    def balanced(self, task: Task) -> bool:
        """Is the task's service behind the load balancer?"""
        return bool(self.bindings.get(task.service or ""))

    def in_service(self, task: Task) -> bool:
        """Healthy in every target group of its service (by the last read)."""
        for group in self._groups_of(task):
            states = {h["id"]: h["state"] for h in self._health.get(group, [])}
            if states.get(task.task_id) != "healthy":
                return False
        return True

    def describe(self, service: str) -> list[dict[str, Any]]:
        """The service's ``loadBalancers``, each with its targets' health in DescribeTargetHealth's shape."""
        described = []
        for ref in self.bindings.get(service, ()):
            group = target_group_name(ref.target_group_arn)
            entry: dict[str, Any] = {
                "targetGroupArn": ref.target_group_arn,
                "containerName": ref.container_name,
                "containerPort": ref.container_port,
                "targetHealthDescriptions": [
                    {
                        "Target": {"Id": h["id"], "Port": h["port"]},
                        "HealthCheckPort": str(h["port"]),
                        "TargetHealth": {
                            "State": h["state"],
                            **({"Reason": h["reason"]} if h["reason"] else {}),
                            **({"Description": h["description"]} if h["description"] else {}),
                        },
                    }
                    for h in self._health.get(group, [])
                ],
            }
            if group in self._errors:
                entry["error"] = self._errors[group]
            described.append(entry)
        return described

    async def close(self, *, wait: bool) -> None:
        """Finish (``wait``) or abandon the drains still running."""
        jobs = list(self._drains.values())
        if not wait:
            for job in jobs:
                job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
