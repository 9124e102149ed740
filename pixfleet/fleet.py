"""``pixfleet status | events | service | run-task | taskdef | task`` — the control plane's command line.

Each command is a few calls of :class:`~pixfleet.orchestrator_client.OrchestratorClient` — ECS and
Application Auto Scaling calls, as ``aws ecs`` / ``aws application-autoscaling`` would make them — and a
rendering from :mod:`pixfleet.fleet_view`; neither knows about the other. Each command's help names the
AWS calls it makes, so that what is learnt here carries over to AWS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from pixfleet.endpoints import require_stack
from pixfleet.fleet_view import EventLine, FleetStatus, render_events, render_status
from pixfleet.orchestrator_client import OrchestratorClient, OrchestratorError, OrchestratorUnreachable

console = Console()
err = Console(stderr=True)
T = TypeVar("T")


def _client(url: str | None) -> OrchestratorClient:
    """The orchestrator at ``--orchestrator URL``, else the running stack's (from stack.json)."""
    if url:
        return OrchestratorClient.from_stack({}, url)
    return OrchestratorClient.from_stack(require_stack(instead="--orchestrator URL"))


def _run(call: Coroutine[Any, Any, T]) -> T:
    """Run one client call; a refusal or no answer becomes a one-line error, not a traceback."""
    try:
        return asyncio.run(call)
    except OrchestratorUnreachable as exc:
        raise click.ClickException(f"{exc} (is the stack running? `pixfleet status` reads stack.json)") from None
    except OrchestratorError as exc:
        raise click.ClickException(f"{exc.message} ({exc.code})") from None


orchestrator_option = click.option(
    "--orchestrator", "orchestrator_url", help="Orchestrator URL (default: the running stack's, from stack.json)."
)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the orchestrator's status as one JSON object.")
@click.option(
    "--wide",
    is_flag=True,
    help="Every column in full (task ids, counts, process ids), however wide: for wide terminals or `less -S`.",
)
@orchestrator_option
def status(as_json: bool, wide: bool, orchestrator_url: str | None) -> None:
    """Queue depth, services (tasks, scaling, deployment) and their tasks.

    ECS ListServices, DescribeServices, ListTasks, DescribeTasks; Application Auto Scaling
    DescribeScalableTargets, DescribeScalingActivities; the queue from the orchestrator's /metrics.
    """
    data = _run(_client(orchestrator_url).status())
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    parts = render_status(FleetStatus.from_snapshot(data), wide=wide)
    # --wide: every cell in full, as wide as that takes (the terminal or `less -S` wraps or scrolls it)
    unbounded = console.options.update_width(10_000)
    out = (
        console
        if not wide
        else Console(width=max(console.width, *(console.measure(p, options=unbounded).maximum for p in parts)))
    )
    for part in parts:
        out.print(part)


@click.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they happen (Ctrl-C stops).")
@click.option("--service", help="Only this service's events.")
@click.option("--limit", default=30, show_default=True, help="How many of the latest events to show.")
@orchestrator_option
def events(follow: bool, service: str | None, limit: int, orchestrator_url: str | None) -> None:
    """Service events (DescribeServices' events), newest first (oldest first while following)."""
    client = _client(orchestrator_url)
    if not follow:
        console.print(render_events([EventLine.from_event(e) for e in _run(client.events(service, limit))]))
        return

    async def stream() -> None:
        async for event in client.follow_events(service, limit):
            console.print(render_events([EventLine.from_event(event)]))

    with contextlib.suppress(KeyboardInterrupt):
        _run(stream())


@click.group()
def service() -> None:
    """Change a service: scaling limits, desired count, task definition (deploy / roll back)."""


@dataclass(frozen=True)
class ScaleChange:
    """What ``service scale`` asks of the orchestrator, and how to say it."""

    desired_count: int | None = None
    minimum: int | None = None
    maximum: int | None = None


def plan_scale(
    name: str,
    scaling: tuple[int, int] | None,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    desired: int | None = None,
    pin: bool = False,
) -> ScaleChange:
    """The change to make, or a UsageError saying why not (``scaling``: the service's current min..max).

    A desired count set by hand on an autoscaled service would be undone by its scaler within
    seconds, so it is refused, unless ``pin`` fixes the range at it (min = max = desired).
    """
    if pin and (desired is None or minimum is not None or maximum is not None):
        raise click.UsageError("--pin goes with --desired N alone (it sets min = max = N)")
    if minimum is None and maximum is None and desired is None:
        raise click.UsageError("give --min and/or --max (autoscaling range), or --desired N")
    if (desired is not None and desired < 0) or any(v is not None and v < 0 for v in (minimum, maximum)):
        raise click.UsageError("counts must be 0 or more")
    if scaling is None:
        if minimum is not None or maximum is not None:
            raise click.UsageError(f"{name} is not autoscaled: --min/--max do not apply; --desired N sets its count")
        return ScaleChange(desired_count=desired)
    if desired is not None and not pin:
        low, high = scaling
        raise click.UsageError(
            f"{name} is autoscaled ({low}..{high}): its scaler sets the desired count and would undo "
            f"--desired {desired} within seconds. Change the range with --min/--max, or fix the count "
            f"with --desired {desired} --pin (min = max = {desired})."
        )
    if pin:
        return ScaleChange(minimum=desired, maximum=desired)
    low, high = minimum if minimum is not None else scaling[0], maximum if maximum is not None else scaling[1]
    if low > high:
        raise click.UsageError(f"--min {low} is above --max {high}")
    return ScaleChange(minimum=minimum, maximum=maximum)


@service.command("scale")
@click.argument("name")
@click.option("--min", "minimum", type=int, help="Autoscaling minimum (the scaler never goes below).")
@click.option("--max", "maximum", type=int, help="Autoscaling maximum (the scaler never goes above).")
@click.option(
    "--desired",
    type=int,
    help="Desired count of a service that is not autoscaled (an autoscaled one needs --pin).",
)
@click.option("--pin", is_flag=True, help="With --desired N on an autoscaled service: set min = max = N.")
@orchestrator_option
def service_scale(
    name: str,
    minimum: int | None,
    maximum: int | None,
    desired: int | None,
    pin: bool,
    orchestrator_url: str | None,
) -> None:
    """Change a service's task count at run time: the autoscaling range, or a fixed count.

    The range is Application Auto Scaling's RegisterScalableTarget (MinCapacity, MaxCapacity); a
    fixed count is ECS UpdateService --desired-count.
    """
    client = _client(orchestrator_url)
    before = _run(client.service(name))
    was: tuple[int, int] | None = None
    if before.get("autoScaling"):
        was = (before["autoScaling"]["min"], before["autoScaling"]["max"])
    change = plan_scale(name, was, minimum=minimum, maximum=maximum, desired=desired, pin=pin)
    if change.minimum is not None or change.maximum is not None:
        after = _run(client.set_scaling_limits(name, minimum=change.minimum, maximum=change.maximum))
    else:
        after = _run(client.update_service(name, desired_count=change.desired_count))
    console.print(scale_report(name, was, before["desiredCount"], after, pinned=pin))


def scale_report(
    name: str, was: tuple[int, int] | None, desired_before: int, after: dict[str, Any], *, pinned: bool = False
) -> str:
    """What changed, and (after a pin) how to undo it."""
    scaling = after.get("autoScaling")
    if not scaling or was is None:
        return f"{name}: desired count {after['desiredCount']} (was {desired_before})"
    now = f"{scaling['min']}..{scaling['max']}"
    if pinned:
        return (
            f"{name}: pinned at {scaling['min']} tasks (autoscaling {now}, was {was[0]}..{was[1]}).\n"
            f"Let the scaler work again: pixfleet service scale {name} --min {was[0]} --max {was[1]}"
        )
    return (
        f"{name}: autoscaling {now} (was {was[0]}..{was[1]}); desired now {after['desiredCount']}, "
        "and the scaler moves it within the range."
    )


@service.command("update")
@click.argument("name")
@click.option("--taskdef", required=True, help="FAMILY:REV (or FAMILY for the latest revision).")
@orchestrator_option
def service_update(name: str, taskdef: str, orchestrator_url: str | None) -> None:
    """Deploy another task definition revision, rolling (and rolled back if its tasks fail).

    ECS UpdateService --task-definition; the circuit breaker rolls a failing revision back.
    """
    s = _run(_client(orchestrator_url).update_service(name, task_definition=taskdef))
    console.print(f"{name}: deploying {s['taskDefinition']}; follow it with `pixfleet events -f --service {name}`")


@click.command("run-task")
@click.argument("family")
@click.option("--count", default=1, show_default=True, help="How many tasks to start (1..10, as RunTask).")
@click.option(
    "--idle-exit",
    default=5.0,
    show_default=True,
    help="Seconds a worker task waits on an empty queue before it exits (sets PIXFLEET_WORKER_IDLE_EXIT_AFTER).",
)
@click.option("--env", "env", multiple=True, help="NAME=VALUE added to the task's environment (repeatable).")
@orchestrator_option
def run_task(family: str, count: int, idle_exit: float, env: tuple[str, ...], orchestrator_url: str | None) -> None:
    """Start one-off tasks of FAMILY[:REV] (batch mode: a worker drains the queue, then exits).

    ECS RunTask with containerOverrides' environment.
    """
    overrides = {"PIXFLEET_WORKER_IDLE_EXIT_AFTER": str(idle_exit)}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.UsageError(f"--env needs NAME=VALUE, got {item!r}")
        overrides[key] = value
    for t in _run(_client(orchestrator_url).run_task(family, count, overrides)):
        console.print(f"started {t['taskId'][:8]} ({t['taskDefinition']}), {t['lastStatus'].lower()}")


@click.group()
def taskdef() -> None:
    """Task definitions: register revisions, list them."""


@taskdef.command("register")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@orchestrator_option
def taskdef_register(file: Path, orchestrator_url: str | None) -> None:
    """Register FILE (ECS RegisterTaskDefinition JSON) as a new revision (RegisterTaskDefinition)."""
    try:
        doc = json.loads(file.read_text())
    except ValueError as exc:
        raise click.ClickException(f"{file}: not valid JSON: {exc}") from None
    console.print(_run(_client(orchestrator_url).register_task_definition(doc)))


@taskdef.command("list")
@orchestrator_option
def taskdef_list(orchestrator_url: str | None) -> None:
    """Every registered revision (FAMILY:REV; ListTaskDefinitions)."""
    for key in _run(_client(orchestrator_url).task_definitions()):
        console.print(key)


@click.group()
def task() -> None:
    """Individual tasks."""


@task.command("kill")
@click.argument("task_id")
@orchestrator_option
def task_kill(task_id: str, orchestrator_url: str | None) -> None:
    """SIGKILL the task whose id starts with TASK_ID (a failure drill): its service replaces it.

    Like an OOM kill or `docker kill`, from outside the control plane (DescribeTasks finds its
    process or container); `pixfleet task stop` is ECS StopTask.
    """
    client = _client(orchestrator_url)
    victim = _one_task(client, task_id)
    _run(client.kill_task(victim))
    console.print(f"killed {victim[:8]}; its service starts a replacement (`pixfleet events` says so)")


@task.command("stop")
@click.argument("task_id")
@click.option("--reason", default="Stopped by pixfleet task stop", show_default=True, help="ECS's stoppedReason.")
@orchestrator_option
def task_stop(task_id: str, reason: str, orchestrator_url: str | None) -> None:
    """Stop a task as ECS StopTask does: SIGTERM, SIGKILL after its stopTimeout."""
    client = _client(orchestrator_url)
    stopped = _run(client.stop_task(_one_task(client, task_id), reason))
    console.print(f"stopping {stopped['taskId'][:8]} ({stopped['lastStatus'].lower()}): {reason}")


def _one_task(client: OrchestratorClient, prefix: str) -> str:
    """The id of the one task that has not stopped whose id starts with ``prefix``."""
    live = [t["taskId"] for t in _run(client.tasks(status=None)) if t["lastStatus"] != "STOPPED"]
    matches = [t for t in live if t.startswith(prefix)]
    if not matches:
        raise click.ClickException(f"no running task's id starts with {prefix!r} (see `pixfleet status`)")
    if len(matches) > 1:
        raise click.ClickException(f"{prefix!r} matches {len(matches)} tasks: {', '.join(m[:12] for m in matches)}")
    return matches[0]


COMMANDS = [status, events, service, run_task, taskdef, task]
