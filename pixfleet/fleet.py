"""``pixfleet status | events | service | run-task | taskdef | task`` — the orchestrator's command line."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import click
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)


class Orchestrator:
    """A thin client of the orchestrator's HTTP API (found through ``.pixfleet/stack.json``)."""

    def __init__(self, url: str, token: str | None):
        self.url = url.rstrip("/")
        self.token = token

    @classmethod
    def discover(cls, url: str | None = None) -> Orchestrator:
        if url:
            return cls(url, os.environ.get("PIXFLEET_ORCHESTRATOR_TOKEN"))
        path = Path(os.environ.get("PIXFLEET_STATE_DIR", ".pixfleet")) / "stack.json"
        try:
            stack = json.loads(path.read_text())
        except FileNotFoundError:
            raise click.ClickException(
                f"no running stack: {path} not found (start one with `pixfleet up`, or pass --orchestrator)"
            ) from None
        return cls(stack["orchestrator_url"], stack.get("orchestrator_token"))

    def call(self, method: str, path: str, body: Any = None) -> Any:
        async def go() -> Any:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
                async with http.request(method, f"{self.url}{path}", json=body, headers=headers) as r:
                    data = await r.json(content_type=None)
                    if r.status >= 400:
                        message = (data or {}).get("error", {}).get("message", r.reason)
                        raise click.ClickException(f"{method} {path}: {r.status} {message}")
                    return data

        try:
            return asyncio.run(go())
        except aiohttp.ClientError as exc:
            raise click.ClickException(f"cannot reach the orchestrator at {self.url}: {exc}") from None


orchestrator_option = click.option(
    "--orchestrator", "orchestrator_url", help="Orchestrator URL (default: the running stack's)."
)


def _age(ts: float | None) -> str:
    if not ts:
        return "-"
    seconds = time.time() - ts
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@orchestrator_option
def status(as_json: bool, orchestrator_url: str | None) -> None:
    """Services, tasks and queue depth."""
    data = Orchestrator.discover(orchestrator_url).call("GET", "/v1/status")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    queue = data.get("queue")
    if queue:
        console.print(
            f"[bold]queue[/]: {queue['visible']} visible, {queue['in_flight']} in flight, {queue['delayed']} delayed, {queue.get('dead_letters')} in the DLQ"
        )
    else:
        console.print("[bold]queue[/]: [red]metrics unavailable[/]")
    services = Table(title="services", title_justify="left")
    for col in (
        "service",
        "task definition",
        "desired",
        "running",
        "healthy",
        "pending",
        "stopping",
        "scaling",
        "deployments",
    ):
        services.add_column(col)
    for s in data["services"]:
        scaling = s["autoScaling"]
        services.add_row(
            s["serviceName"],
            s["taskDefinition"],
            str(s["desiredCount"]),
            str(s["runningCount"]),
            str(s["healthyCount"]),
            str(s["pendingCount"]),
            str(s["stoppingCount"]),
            f"{scaling['min']}..{scaling['max']}" if scaling else "-",
            ", ".join(
                f"{d['taskDefinition']} {d['status'].lower()} {d['rolloutState'].lower()}" for d in s["deployments"]
            ),
        )
    console.print(services)
    tasks = Table(title="tasks", title_justify="left")
    for col in ("task", "group", "task definition", "status", "health", "in flight", "up", "pid / container"):
        tasks.add_column(col)
    for t in data["tasks"]:
        tasks.add_row(
            t["taskId"][:8],
            t["group"],
            t["taskDefinition"],
            t["lastStatus"],
            t["healthStatus"],
            "-" if t["inFlight"] is None else str(t["inFlight"]),
            _age(t["startedAt"]),
            str(t["containerId"] or t["pid"] or "-"),
        )
    console.print(tasks)


@click.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events.")
@click.option("--service", help="Only this service's events.")
@click.option("--limit", default=30, show_default=True)
@orchestrator_option
def events(follow: bool, service: str | None, limit: int, orchestrator_url: str | None) -> None:
    """ECS-style service events, newest first (or oldest first while following)."""
    orch = Orchestrator.discover(orchestrator_url)
    query = f"?limit={limit}" + (f"&service={service}" if service else "")

    def show(e: dict[str, Any]) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(e["createdAt"]))
        console.print(f"[dim]{stamp}[/] {e['message']}", highlight=False)

    if not follow:
        for e in orch.call("GET", f"/v1/events{query}")["events"]:
            show(e)
        return

    async def stream() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
            async with http.get(f"{orch.url}/v1/events{query}&follow=1") as r:
                async for line in r.content:
                    if line.startswith(b"data: "):
                        show(json.loads(line[6:]))

    try:
        asyncio.run(stream())
    except KeyboardInterrupt:
        pass


@click.group()
def service() -> None:
    """Change a service: scaling limits, desired count, task definition (deploy / roll back)."""


@service.command("scale")
@click.argument("name")
@click.option("--min", "minimum", type=int, help="Autoscaling minimum.")
@click.option("--max", "maximum", type=int, help="Autoscaling maximum.")
@click.option("--desired", type=int, help="Desired count (clamped to min..max when autoscaled).")
@orchestrator_option
def service_scale(
    name: str, minimum: int | None, maximum: int | None, desired: int | None, orchestrator_url: str | None
) -> None:
    """Change a service's scaling at run time."""
    if minimum is None and maximum is None and desired is None:
        raise click.UsageError("give --min, --max and/or --desired")
    body = {k: v for k, v in (("min", minimum), ("max", maximum), ("desiredCount", desired)) if v is not None}
    s = Orchestrator.discover(orchestrator_url).call("PATCH", f"/v1/services/{name}", body)
    scaling = s["autoScaling"]
    console.print(
        f"{name}: desired {s['desiredCount']}" + (f", scaling {scaling['min']}..{scaling['max']}" if scaling else "")
    )


@service.command("update")
@click.argument("name")
@click.option("--taskdef", required=True, help="FAMILY:REV (or FAMILY for the latest revision).")
@orchestrator_option
def service_update(name: str, taskdef: str, orchestrator_url: str | None) -> None:
    """Deploy another task definition revision, rolling (and rolled back if its tasks fail)."""
    s = Orchestrator.discover(orchestrator_url).call("PATCH", f"/v1/services/{name}", {"taskDefinition": taskdef})
    console.print(f"{name}: deploying {s['taskDefinition']} — follow with `pixfleet events -f --service {name}`")


@click.command("run-task")
@click.argument("family")
@click.option("--count", default=1, show_default=True)
@click.option(
    "--idle-exit", default=5.0, show_default=True, help="Worker tasks exit after the queue stayed empty this long."
)
@click.option("--env", "env", multiple=True, help="NAME=VALUE overrides.")
@orchestrator_option
def run_task(family: str, count: int, idle_exit: float, env: tuple[str, ...], orchestrator_url: str | None) -> None:
    """Start one-off tasks (batch mode: a worker drains the queue, then exits)."""
    overrides = {"PIXFLEET_WORKER_IDLE_EXIT_AFTER": str(idle_exit)}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.UsageError(f"--env needs NAME=VALUE, got {item!r}")
        overrides[key] = value
    data = Orchestrator.discover(orchestrator_url).call(
        "POST", "/v1/tasks", {"taskDefinition": family, "count": count, "environment": overrides}
    )
    for t in data["tasks"]:
        console.print(f"started {t['taskId']} ({t['taskDefinition']}) {t['lastStatus']}")


@click.group()
def taskdef() -> None:
    """Task definitions: register revisions, list them."""


@taskdef.command("register")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@orchestrator_option
def taskdef_register(file: Path, orchestrator_url: str | None) -> None:
    """Register FILE (ECS RegisterTaskDefinition JSON) as a new revision."""
    try:
        doc = json.loads(file.read_text())
    except ValueError as exc:
        raise click.ClickException(f"{file}: not valid JSON: {exc}") from None
    data = Orchestrator.discover(orchestrator_url).call("POST", "/v1/task-definitions", doc)
    console.print(data["taskDefinition"])


@taskdef.command("list")
@orchestrator_option
def taskdef_list(orchestrator_url: str | None) -> None:
    for key in Orchestrator.discover(orchestrator_url).call("GET", "/v1/task-definitions")["taskDefinitions"]:
        console.print(key)


@click.group()
def task() -> None:
    """Individual tasks."""


@task.command("kill")
@click.argument("task_id")
@orchestrator_option
def task_kill(task_id: str, orchestrator_url: str | None) -> None:
    """SIGKILL a task (a failure drill): the service replaces it."""
    orch = Orchestrator.discover(orchestrator_url)
    matches = [t["taskId"] for t in orch.call("GET", "/v1/tasks")["tasks"] if t["taskId"].startswith(task_id)]
    if len(matches) != 1:
        raise click.ClickException(f"{task_id!r} matches {len(matches)} tasks")
    orch.call("POST", f"/v1/tasks/{matches[0]}/kill")
    console.print(f"killed {matches[0]}")


COMMANDS = [status, events, service, run_task, taskdef, task]
