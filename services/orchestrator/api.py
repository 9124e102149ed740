"""The orchestrator's HTTP API: services, tasks, events, metrics, task credentials and metadata.

Reads are open on loopback; changes (scale, update, run-task, register) need the
admin token (``Authorization: Bearer …``) that ``pixfleet up`` writes to
``stack.json``. Task credentials need the task's own token (see credentials.py).

The views (:func:`service_view`, :func:`task_view`, :func:`status_view`) are the JSON
shapes of this API; the orchestrator itself knows nothing of them.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from dataclasses import asdict
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic.alias_generators import to_camel

from services.orchestrator.awsapi.protocol import AwsJsonEndpoint
from services.orchestrator.credentials import credentials_routes
from services.orchestrator.model import Event, Service, Task, TaskState
from services.orchestrator.orchestrator import Orchestrator
from services.orchestrator.taskdefs import TaskDefinitionError, UnknownTaskDefinition

ORCH = web.AppKey("orchestrator", Orchestrator)
ADMIN_TOKEN = web.AppKey("admin_token", str)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _require_admin(request: web.Request) -> None:
    expected = request.app[ADMIN_TOKEN]
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": {"code": "unauthorized", "message": "admin token required"}}),
            content_type="application/json",
        )


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": {"code": "invalid_request", "message": "body must be JSON"}}),
            content_type="application/json",
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": {"code": "invalid_request", "message": "body must be a JSON object"}}),
            content_type="application/json",
        )
    return body


# --- views ---------------------------------------------------------------------------------------


def task_view(task: Task) -> dict[str, Any]:
    """The task as the API shows it (never the token)."""
    handle = task.handle
    return {
        "taskId": task.task_id,
        "group": task.group,
        "service": task.service,
        "taskDefinition": task.taskdef,
        "lastStatus": task.state,
        "desiredStatus": task.desired_status,
        "healthStatus": task.health,
        "createdAt": task.created_at,
        "startedAt": task.started_at,
        "stoppingAt": task.stopping_at,
        "stoppedAt": task.stopped_at,
        "stoppedReason": task.stop_reason,
        "exitCode": task.exit_code,
        "pid": handle.pid if handle else None,
        "containerId": handle.container_id if handle else None,
        "networkBindings": [{"containerPort": c, "hostPort": h} for c, h in (handle.ports if handle else {}).items()],
        "inFlight": task.in_flight,
    }


def service_view(orch: Orchestrator, service: Service) -> dict[str, Any]:
    alive = orch.alive_tasks(service)
    return {
        "serviceName": service.name,
        "taskDefinition": service.primary.taskdef,
        "desiredCount": service.desired_count,
        "runningCount": sum(1 for t in alive if t.state == TaskState.RUNNING),
        "pendingCount": sum(1 for t in alive if t.state == TaskState.PROVISIONING),
        "healthyCount": sum(1 for t in alive if orch.is_healthy(t)),
        "stoppingCount": sum(
            1 for t in orch.tasks.values() if t.service == service.name and t.state == TaskState.STOPPING
        ),
        "steady": service.steady,
        "loadBalancers": orch.load_balancers(service.name),
        "autoScaling": None
        if service.scaling is None
        else {**{to_camel(k): v for k, v in asdict(service.scaling).items()}, "lastDecision": service.last_decision},
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


def status_view(orch: Orchestrator) -> dict[str, Any]:
    return {
        "cluster": orch.cluster,
        "queue": None if orch.queue is None else {**vars(orch.queue), "dead_letters": orch.dead_letters},
        "services": [service_view(orch, s) for s in orch.services.values()],
        "tasks": [
            task_view(t)
            for t in sorted(orch.tasks.values(), key=lambda t: t.created_at, reverse=True)
            if t.state != TaskState.STOPPED
        ][:200],
    }


# --- handlers ------------------------------------------------------------------------------------


async def status(request: web.Request) -> web.Response:
    return web.json_response(status_view(request.app[ORCH]))


async def list_services(request: web.Request) -> web.Response:
    orch = request.app[ORCH]
    return web.json_response({"services": [service_view(orch, s) for s in orch.services.values()]})


async def update_service(request: web.Request) -> web.Response:
    """PATCH /v1/services/{name} {"desiredCount", "min", "max", "taskDefinition"}."""
    _require_admin(request)
    body = await _json_body(request)
    orch = request.app[ORCH]
    try:
        service = orch.update_service(
            request.match_info["name"],
            desired_count=body.get("desiredCount"),
            minimum=body.get("min"),
            maximum=body.get("max"),
            task_definition=body.get("taskDefinition"),
        )
    except KeyError as exc:
        return _error(404, "not_found", str(exc).strip("'\""))
    except (ValueError, UnknownTaskDefinition) as exc:
        return _error(400, "invalid_request", str(exc))
    return web.json_response(service_view(orch, service))


async def list_tasks(request: web.Request) -> web.Response:
    orch = request.app[ORCH]
    wanted = request.query.get("status")
    service = request.query.get("service")
    tasks = sorted(orch.tasks.values(), key=lambda t: t.created_at, reverse=True)
    return web.json_response(
        {
            "tasks": [
                task_view(t)
                for t in tasks
                if (wanted is None or t.state == wanted.upper()) and (service is None or t.service == service)
            ]
        }
    )


async def run_task(request: web.Request) -> web.Response:
    """POST /v1/tasks {"taskDefinition", "count", "environment": {..}} — one-off (batch) tasks."""
    _require_admin(request)
    body = await _json_body(request)
    count = body.get("count", 1)
    env = body.get("environment", {})
    if not isinstance(count, int) or not 1 <= count <= 50 or not isinstance(env, dict):
        return _error(400, "invalid_request", "count must be 1..50 and environment an object")
    try:
        tasks = await request.app[ORCH].run_task(
            str(body.get("taskDefinition", "")), count, {str(k): str(v) for k, v in env.items()}
        )
    except UnknownTaskDefinition as exc:
        return _error(400, "unknown_task_definition", str(exc))
    return web.json_response({"tasks": [task_view(t) for t in tasks]}, status=201)


async def kill_task(request: web.Request) -> web.Response:
    _require_admin(request)
    try:
        request.app[ORCH].kill_task(request.match_info["task_id"])
    except KeyError:
        return _error(404, "not_found", "no such task")
    return web.json_response({"killed": request.match_info["task_id"]})


async def list_taskdefs(request: web.Request) -> web.Response:
    registry = request.app[ORCH].registry
    return web.json_response(
        {"taskDefinitions": [td.key for family in registry.families() for td in registry.revisions(family)]}
    )


async def register_taskdef(request: web.Request) -> web.Response:
    _require_admin(request)
    body = await _json_body(request)
    try:
        taskdef = request.app[ORCH].registry.register(body, source="request body")
    except TaskDefinitionError as exc:
        return _error(400, "invalid_task_definition", str(exc))
    return web.json_response({"taskDefinition": taskdef.key}, status=201)


async def events(request: web.Request) -> web.StreamResponse:
    """GET /v1/events?limit=&service= — newest first; ``?follow=1`` streams new ones (server-sent events)."""
    orch = request.app[ORCH]
    limit = int(request.query.get("limit", "100"))
    service = request.query.get("service")
    if request.query.get("follow"):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        queue: asyncio.Queue[Event] = asyncio.Queue()
        orch.events.listeners.append(queue)
        try:
            for event in reversed(orch.events.newest_first(limit, service)):
                await response.write(f"data: {json.dumps(event.public())}\n\n".encode())
            while True:
                event = await queue.get()
                if service is None or event.service == service:
                    await response.write(f"data: {json.dumps(event.public())}\n\n".encode())
        finally:
            orch.events.listeners.remove(queue)
    return web.json_response({"events": [e.public() for e in orch.events.newest_first(limit, service)]})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(request.app[ORCH].metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def healthz(request: web.Request) -> web.Response:
    orch = request.app[ORCH]
    return web.json_response({"status": "ok", "last_tick": orch.last_tick})


def _metadata(request: web.Request) -> tuple[Orchestrator, Task]:
    orch = request.app[ORCH]
    task = orch.tasks.get(request.match_info["task_id"])
    if task is None or task.task_id not in orch.vault:
        raise web.HTTPNotFound(
            text=json.dumps({"error": {"code": "not_found", "message": "no such task"}}),
            content_type="application/json",
        )
    return orch, task


async def container_metadata(request: web.Request) -> web.Response:
    """``${ECS_CONTAINER_METADATA_URI_V4}`` — the container's metadata (ECS task metadata v4 shape)."""
    orch, task = _metadata(request)
    taskdef = orch.registry.get(task.taskdef)
    container = taskdef.main_container
    handle = task.handle
    return web.json_response(
        {
            "DockerId": (handle.container_id or f"pid-{handle.pid}") if handle else "pid-None",
            "Name": container.name,
            "Image": container.image,
            "Labels": {
                "com.amazonaws.ecs.cluster": orch.cluster,
                "com.amazonaws.ecs.task-definition-family": taskdef.family,
                "com.amazonaws.ecs.task-definition-version": str(taskdef.revision),
                "com.amazonaws.ecs.task-arn": task.task_id,
            },
            "DesiredStatus": task.desired_status,
            "KnownStatus": task.state,
            "Limits": {"CPU": taskdef.cpu, "Memory": taskdef.memory},
            "Ports": [
                {"ContainerPort": c, "HostPort": h, "Protocol": "tcp"}
                for c, h in (handle.ports if handle else {}).items()
            ],
        }
    )


async def task_metadata(request: web.Request) -> web.Response:
    """``${ECS_CONTAINER_METADATA_URI_V4}/task`` — the task's metadata."""
    orch, task = _metadata(request)
    taskdef = orch.registry.get(task.taskdef)
    return web.json_response(
        {
            "Cluster": orch.cluster,
            "TaskARN": task.task_id,
            "Family": taskdef.family,
            "Revision": str(taskdef.revision),
            "ServiceName": task.service,
            "DesiredStatus": task.desired_status,
            "KnownStatus": task.state,
            "Limits": {"CPU": taskdef.cpu / 1024, "Memory": taskdef.memory},
            "PullStartedAt": None,
            "StartedAt": task.started_at,
            "LaunchType": orch.runtime.name.upper(),
            "Containers": [{"Name": taskdef.main_container.name, "Image": taskdef.main_container.image}],
        }
    )


def create_orchestrator_app(
    orchestrator: Orchestrator, admin_token: str, aws: AwsJsonEndpoint | None = None
) -> web.Application:
    """The REST API (``/v1/…``) and, with ``aws``, the AWS JSON APIs (ECS, …) on ``POST /``."""
    app = web.Application()
    app[ORCH] = orchestrator
    app[ADMIN_TOKEN] = admin_token
    app.add_routes(
        [
            web.get("/v1/status", status),
            web.get("/v1/services", list_services),
            web.patch("/v1/services/{name}", update_service),
            web.get("/v1/tasks", list_tasks),
            web.post("/v1/tasks", run_task),
            web.post("/v1/tasks/{task_id}/kill", kill_task),
            web.get("/v1/task-definitions", list_taskdefs),
            web.post("/v1/task-definitions", register_taskdef),
            web.get("/v1/events", events),
            web.get("/v1/metadata/{task_id}", container_metadata),
            web.get("/v1/metadata/{task_id}/task", task_metadata),
            web.get("/metrics", metrics),
            web.get("/healthz", healthz),
            *credentials_routes(orchestrator.vault),
        ]
    )
    if aws is not None:
        app.router.add_post("/", aws.handle)
    return app
