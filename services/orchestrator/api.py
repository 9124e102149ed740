"""The orchestrator's HTTP surface besides the AWS APIs: task credentials and metadata, metrics, health.

The control API is ECS's and Application Auto Scaling's, on ``POST /`` (:mod:`.awsapi`): there is no
other. What stays here is what ECS gives tasks and operators outside it: the credentials endpoint
(``AWS_CONTAINER_CREDENTIALS_FULL_URI``, each task's own role; see credentials.py), the task metadata
v4 endpoint (``ECS_CONTAINER_METADATA_URI_V4``), ``/metrics`` (Prometheus: queue depth, desired and
running tasks per service — what CloudWatch would chart) and ``/healthz``.
"""

from __future__ import annotations

import json

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from services.orchestrator.awsapi.protocol import AwsJsonEndpoint
from services.orchestrator.credentials import credentials_routes
from services.orchestrator.model import Task
from services.orchestrator.orchestrator import Orchestrator

ORCH = web.AppKey("orchestrator", Orchestrator)


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


def create_orchestrator_app(orchestrator: Orchestrator, aws: AwsJsonEndpoint | None = None) -> web.Application:
    """Credentials, metadata, metrics and health; with ``aws``, the AWS JSON APIs (ECS, …) on ``POST /``."""
    app = web.Application()
    app[ORCH] = orchestrator
    app.add_routes(
        [
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
