"""What ``pixfleet status`` and ``pixfleet events`` show, as pure functions of plain data.

The data (:class:`FleetStatus`, :class:`EventLine`) does not know where it came from:
``FleetStatus.from_snapshot`` reads :meth:`OrchestratorClient.status`'s answer (ECS's DescribeServices
and DescribeTasks, Application Auto Scaling's targets, summarised by ``pixfleet.orchestrator_client``).

The default view fits an 80-column terminal without cutting a cell short: fewer columns (the
counts summed up in one "tasks" cell, short task ids, no process ids), no borders, and cells that
are too long wrap instead of ending in "…". ``wide=True`` shows every column with no cell wrapped,
for a console as wide as the tables.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class QueueDepth:
    visible: int
    in_flight: int
    delayed: int
    dead_letters: int | None


@dataclass(frozen=True)
class DeploymentRow:
    task_definition: str
    status: str  # PRIMARY | ACTIVE | INACTIVE
    rollout_state: str  # IN_PROGRESS | COMPLETED | FAILED
    failed_tasks: int = 0


@dataclass(frozen=True)
class ServiceRow:
    name: str
    task_definition: str
    desired: int
    running: int
    healthy: int
    pending: int
    stopping: int
    scaling: tuple[int, int] | None  # autoscaling min..max, None when not autoscaled
    deployments: tuple[DeploymentRow, ...]
    last_decision: str | None = None  # the scaler's latest reasoning


@dataclass(frozen=True)
class TaskRow:
    task_id: str
    service: str | None  # None: a one-off (run-task) task
    group: str
    task_definition: str
    status: str
    health: str
    in_flight: int | None  # jobs a worker holds; None for other tasks
    started_at: float | None
    pid: int | None = None
    container_id: str | None = None


@dataclass(frozen=True)
class TargetRow:
    """One target of a load-balanced service, in DescribeTargetHealth's words."""

    service: str
    target_group: str  # its name (the resource part of the ARN)
    task_id: str
    port: int
    state: str  # initial | healthy | unhealthy | draining | unavailable
    reason: str | None


@dataclass(frozen=True)
class FleetStatus:
    queue: QueueDepth | None  # None: the orchestrator could not read the queue
    services: tuple[ServiceRow, ...]
    tasks: tuple[TaskRow, ...]
    targets: tuple[TargetRow, ...] = ()

    @classmethod
    def from_snapshot(cls, doc: dict[str, Any]) -> FleetStatus:
        """From :meth:`OrchestratorClient.status` (services and tasks as its summaries, the queue from /metrics)."""
        queue = doc.get("queue")
        return cls(
            queue=None
            if not queue
            else QueueDepth(queue["visible"], queue["in_flight"], queue["delayed"], queue.get("dead_letters")),
            services=tuple(_service_row(s) for s in doc.get("services", [])),
            tasks=tuple(_task_row(t) for t in doc.get("tasks", [])),
            targets=tuple(row for s in doc.get("services", []) for row in _target_rows(s)),
        )


def _target_rows(s: dict[str, Any]) -> list[TargetRow]:
    rows = []
    for lb in s.get("loadBalancers") or []:
        arn = lb["targetGroupArn"]
        group = arn.split(":targetgroup/", 1)[1].split("/")[0] if ":targetgroup/" in arn else arn
        for d in lb.get("targetHealthDescriptions", []):
            health = d["TargetHealth"]
            rows.append(
                TargetRow(
                    s["serviceName"],
                    group,
                    d["Target"]["Id"],
                    d["Target"]["Port"],
                    health["State"],
                    health.get("Reason"),
                )
            )
    return rows


def _service_row(s: dict[str, Any]) -> ServiceRow:
    scaling = s.get("autoScaling")
    return ServiceRow(
        name=s["serviceName"],
        task_definition=s["taskDefinition"],
        desired=s["desiredCount"],
        running=s["runningCount"],
        healthy=s["healthyCount"],
        pending=s["pendingCount"],
        stopping=s["stoppingCount"],
        scaling=None if not scaling else (scaling["min"], scaling["max"]),
        deployments=tuple(
            DeploymentRow(d["taskDefinition"], d["status"], d["rolloutState"], d.get("failedTasks", 0))
            for d in s.get("deployments", [])
        ),
        last_decision=s.get("lastDecision"),
    )


def _task_row(t: dict[str, Any]) -> TaskRow:
    return TaskRow(
        task_id=t["taskId"],
        service=t.get("service"),
        group=t.get("group", ""),
        task_definition=t["taskDefinition"],
        status=t["lastStatus"],
        health=t["healthStatus"],
        in_flight=t.get("inFlight"),
        started_at=t.get("startedAt"),
        pid=t.get("pid"),
        container_id=t.get("containerId"),
    )


# --- cells -------------------------------------------------------------------------------------


def age(started_at: float | None, now: float) -> str:
    """How long ago, in the unit a person reads at a glance: ``45s``, ``12m``, ``3h``, ``2d``."""
    if not started_at:
        return "-"
    seconds = max(0.0, now - started_at)
    for limit, unit, size in ((120, "s", 1), (120 * 60, "m", 60), (48 * 3600, "h", 3600)):
        if seconds < limit:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds / 86400:.0f}d"


def tasks_cell(s: ServiceRow) -> str:
    """``2/3 running``, plus what is not yet (or no longer) serving."""
    parts = [f"{s.running}/{s.desired} running"]
    if s.healthy < s.running:
        parts.append(f"{s.healthy} healthy")
    if s.pending:
        parts.append(f"{s.pending} starting")
    if s.stopping:
        parts.append(f"{s.stopping} stopping")
    return ", ".join(parts)


def scaling_cell(s: ServiceRow) -> str:
    return "-" if s.scaling is None else f"{s.scaling[0]}..{s.scaling[1]}"


def deployments_cell(s: ServiceRow) -> str:
    """One line per deployment; a lone completed one is just ``completed``."""
    if len(s.deployments) == 1 and s.deployments[0].task_definition == s.task_definition:
        return _rollout(s.deployments[0])
    return "\n".join(f"{d.task_definition} {_rollout(d)}" for d in s.deployments)


def _rollout(d: DeploymentRow) -> str:
    text = d.rollout_state.lower().replace("_", " ")
    if d.status != "PRIMARY":
        text = f"{d.status.lower()}, {text}"
    return f"{text} ({d.failed_tasks} failed)" if d.failed_tasks else text


def service_of(t: TaskRow) -> str:
    return t.service or "run-task"


def queue_line(queue: QueueDepth | None) -> Text:
    if queue is None:
        return Text.from_markup("[bold]queue[/]  [red]depth unavailable[/] (the orchestrator cannot read it)")
    dlq = "?" if queue.dead_letters is None else str(queue.dead_letters)
    return Text.from_markup(
        f"[bold]queue[/]  {queue.visible} visible · {queue.in_flight} in flight · {queue.delayed} delayed · "
        f"{dlq} in the DLQ"
    )


# --- tables ------------------------------------------------------------------------------------


def _table(title: str, columns: Sequence[tuple[str, bool]], wide: bool) -> Table:
    """``columns``: (header, may wrap). No borders: every column counts at 80. Wide tables never wrap a cell."""
    table = Table(title=title, title_justify="left", box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    for header, wraps in columns:
        table.add_column(header, overflow="fold", no_wrap=wide or not wraps)
    return table


def services_table(status: FleetStatus, *, wide: bool = False) -> Table:
    if wide:
        table = _table(
            "services",
            [
                (h, True)
                for h in (
                    "service",
                    "task definition",
                    "desired",
                    "running",
                    "healthy",
                    "pending",
                    "stopping",
                    "scaling",
                    "deployments",
                )
            ],
            wide,
        )
        for s in status.services:
            table.add_row(
                s.name,
                s.task_definition,
                str(s.desired),
                str(s.running),
                str(s.healthy),
                str(s.pending),
                str(s.stopping),
                scaling_cell(s),
                "\n".join(f"{d.task_definition} {d.status.lower()} {_rollout(d)}" for d in s.deployments),
            )
        return table
    table = _table(
        "services",
        [("service", True), ("task definition", True), ("tasks", True), ("scaling", False), ("deployment", True)],
        wide,
    )
    for s in status.services:
        table.add_row(s.name, s.task_definition, tasks_cell(s), scaling_cell(s), deployments_cell(s))
    return table


def tasks_table(status: FleetStatus, *, wide: bool = False, now: float | None = None) -> Table:
    now = time.time() if now is None else now
    ordered = sorted(status.tasks, key=lambda t: (service_of(t), t.started_at or 0))
    if wide:
        table = _table(
            "tasks",
            [
                (h, True)
                for h in (
                    "task",
                    "group",
                    "task definition",
                    "status",
                    "health",
                    "in flight",
                    "up",
                    "pid / container",
                )
            ],
            wide,
        )
        for t in ordered:
            table.add_row(
                t.task_id,
                t.group,
                t.task_definition,
                t.status,
                t.health,
                "-" if t.in_flight is None else str(t.in_flight),
                age(t.started_at, now),
                str(t.container_id or t.pid or "-"),
            )
        return table
    table = _table(
        "tasks",
        [
            ("task", False),
            ("service", True),
            ("task definition", True),
            ("status", False),
            ("health", False),
            ("jobs", False),
            ("up", False),
        ],
        wide,
    )
    for t in ordered:
        table.add_row(
            t.task_id[:8],
            service_of(t),
            t.task_definition,
            t.status,
            t.health,
            "-" if t.in_flight is None else str(t.in_flight),
            age(t.started_at, now),
        )
    return table


def targets_table(status: FleetStatus, *, wide: bool = False) -> Table:
    """The load balancer's view of each service's tasks: target group, task, port, ELBv2 state."""
    table = _table(
        "targets",
        [("target group", True), ("task", False), ("port", False), ("state", False), ("reason", True)],
        wide,
    )
    for t in sorted(status.targets, key=lambda t: (t.target_group, t.task_id)):
        table.add_row(t.target_group, t.task_id if wide else t.task_id[:8], str(t.port), t.state, t.reason or "")
    return table


def render_status(status: FleetStatus, *, wide: bool = False, now: float | None = None) -> list[RenderableType]:
    """The whole ``pixfleet status`` screen: queue depth, services, the scaler's reasoning, tasks."""
    parts: list[RenderableType] = [queue_line(status.queue), Text(), services_table(status, wide=wide)]
    decisions = [(s.name, s.last_decision) for s in status.services if s.last_decision]
    for name, decision in decisions:
        parts.append(Text(f"scaling ({name}): {decision}", style="dim"))  # not markup: a message may hold "["
    parts.append(Text())
    if status.targets:
        parts += [targets_table(status, wide=wide), Text()]
    if status.tasks:
        parts.append(tasks_table(status, wide=wide, now=now))
    else:
        parts.append(Text("no tasks running"))
    return parts


# --- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventLine:
    created_at: float
    message: str

    @classmethod
    def from_event(cls, doc: dict[str, Any]) -> EventLine:
        return cls(doc["createdAt"], doc["message"])


def render_events(events: Sequence[EventLine]) -> Table:
    """Time, then the message; a long message wraps under itself, not under the time."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    for e in events:
        grid.add_row(time.strftime("%H:%M:%S", time.localtime(e.created_at)), e.message)
    return grid
