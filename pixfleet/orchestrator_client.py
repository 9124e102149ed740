"""The one client of the control plane, for every tool (CLI, embedded stack, drills, load tests, benchmarks).

The control plane's only API is ECS's and Application Auto Scaling's (AWS JSON 1.1, SigV4): each method
here is a few calls of aiobotocore's ``ecs`` and ``application-autoscaling`` clients, exactly what a user's
boto3 script or ``aws ecs`` would send, against ``stack.json``'s ``ecs_endpoint_url``. Queue depth is read
from the orchestrator's ``/metrics`` (Prometheus; what CloudWatch would chart on AWS).

The answers are summarised for tools by pure functions (:func:`task_summary`, :func:`service_summary`):
short ids (``taskId``, ``family:rev``), epoch timestamps, and what pixfleet adds to ECS's fields in each
task's ``attributes`` (``pixfleet.pid``, ``pixfleet.jobsInFlight``, ``pixfleet.target.GROUP``). Rendering
is the caller's business (``pixfleet.fleet_view``).

Credentials: the stack's admin token (``stack.json``; the control plane derives an admin key pair from it,
see ``services.orchestrator.awsapi.endpoint.admin_signer``), else ``PIXFLEET_ORCHESTRATOR_TOKEN``, else
botocore's default chain (``eval "$(pixfleet env)"`` exports the stack's admin keys, which it accepts too).

Errors: :class:`OrchestratorError` for an answer that refuses the call (HTTP status, AWS error code and
message), :class:`OrchestratorUnreachable` when there is no answer at all. Both are ``RuntimeError``s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import aiohttp
import botocore.exceptions
from aiobotocore.session import AioSession, get_session

from pipeline.aws import client_config
from pipeline.fleet_metrics import queue_depth
from services.orchestrator.awsapi.ecs_views import IN_FLIGHT_ATTRIBUTE, PID_ATTRIBUTE, TARGET_ATTRIBUTE
from services.orchestrator.awsapi.endpoint import admin_signer

TOKEN_ENV = "PIXFLEET_ORCHESTRATOR_TOKEN"
DIMENSION = "ecs:service:DesiredCount"
_SESSION: AioSession | None = None


def _session() -> AioSession:
    global _SESSION
    if _SESSION is None:
        _SESSION = get_session()  # one session: its loaded service models are reused by every client
    return _SESSION


class OrchestratorError(RuntimeError):
    """The control plane refused a call."""

    def __init__(self, action: str, status: int, code: str, message: str):
        super().__init__(f"{action}: {status} {code}: {message}")
        self.action, self.status, self.code, self.message = action, status, code, message


class OrchestratorUnreachable(OrchestratorError):
    """No answer from the control plane (connection refused, timeout)."""

    def __init__(self, url: str, reason: str):
        RuntimeError.__init__(self, f"cannot reach the orchestrator at {url}: {reason}")
        self.action, self.status, self.code, self.message = "", 0, "unreachable", reason


# --- summaries (pure) ------------------------------------------------------------------------------


def _epoch(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else value


def short_taskdef(arn: str) -> str:
    """``arn:aws:ecs:…:task-definition/pixfleet-worker:3`` → ``pixfleet-worker:3``."""
    return arn.rsplit("/", 1)[-1]


def task_summary(task: Mapping[str, Any]) -> dict[str, Any]:
    """One task of ``DescribeTasks``, for tools: short ids, epoch times, pixfleet's attributes unpacked."""
    attributes = {a["name"]: a.get("value", "") for a in task.get("attributes", [])}
    container = (task.get("containers") or [{}])[0]
    group = task.get("group", "")
    pid = attributes.get(PID_ATTRIBUTE)
    in_flight = attributes.get(IN_FLIGHT_ATTRIBUTE)
    return {
        "taskId": task["taskArn"].rsplit("/", 1)[-1],
        "taskArn": task["taskArn"],
        "group": group,
        "service": group.removeprefix("service:") if group.startswith("service:") else None,
        "taskDefinition": short_taskdef(task["taskDefinitionArn"]),
        "lastStatus": task["lastStatus"],
        "desiredStatus": task["desiredStatus"],
        "healthStatus": task.get("healthStatus", "UNKNOWN"),
        "createdAt": _epoch(task.get("createdAt")),
        "startedAt": _epoch(task.get("startedAt")),
        "stoppingAt": _epoch(task.get("stoppingAt")),
        "stoppedAt": _epoch(task.get("stoppedAt")),
        "stoppedReason": task.get("stoppedReason"),
        "stopCode": task.get("stopCode"),
        "exitCode": container.get("exitCode"),
        "pid": int(pid) if pid else None,
        "containerId": container.get("runtimeId"),
        "networkBindings": [
            {"containerPort": b["containerPort"], "hostPort": b["hostPort"]}
            for b in container.get("networkBindings", [])
        ],
        "inFlight": int(in_flight) if in_flight else None,
        "targets": {
            k.removeprefix(TARGET_ATTRIBUTE): v for k, v in attributes.items() if k.startswith(TARGET_ATTRIBUTE)
        },
    }


def task_in_service(task: Mapping[str, Any], has_check: bool) -> bool:
    """RUNNING, its container healthy (or without a health check), healthy in every target group it is in."""
    healthy = task["healthStatus"] == "HEALTHY" or (not has_check and task["healthStatus"] == "UNKNOWN")
    targets_ok = all(value.split(" ")[1:2] == ["healthy"] for value in task.get("targets", {}).values())
    return task["lastStatus"] == "RUNNING" and task["desiredStatus"] == "RUNNING" and healthy and targets_ok


def service_summary(
    service: Mapping[str, Any],
    tasks: Sequence[Mapping[str, Any]],
    *,
    target: Mapping[str, Any] | None = None,
    has_check: Mapping[str, bool] | None = None,
    last_decision: str | None = None,
) -> dict[str, Any]:
    """One service of ``DescribeServices`` with its tasks (summaries) and its scalable target, for tools.

    ``steady`` is what ``aws ecs wait services-stable`` waits for, and a little more: one deployment whose
    rollout COMPLETED, as many healthy running tasks as desired, none starting or stopping.
    """
    name = service["serviceName"]
    mine = [t for t in tasks if t["service"] == name]
    checks = has_check or {}
    healthy = sum(1 for t in mine if task_in_service(t, checks.get(t["taskDefinition"], True)))
    stopping = sum(1 for t in mine if t["desiredStatus"] == "STOPPED" and t["lastStatus"] != "STOPPED")
    deployments = [
        {
            "id": d["id"],
            "taskDefinition": short_taskdef(d["taskDefinition"]),
            "status": d["status"],
            "rolloutState": d.get("rolloutState", "COMPLETED"),
            "reason": d.get("rolloutStateReason", ""),
            "failedTasks": d.get("failedTasks", 0),
            "desiredCount": d.get("desiredCount", 0),
            "runningCount": d.get("runningCount", 0),
            "pendingCount": d.get("pendingCount", 0),
            "createdAt": _epoch(d.get("createdAt")),
        }
        for d in service.get("deployments", [])
    ]
    desired, running, pending = service["desiredCount"], service["runningCount"], service["pendingCount"]
    steady = (
        len(deployments) == 1
        and deployments[0]["rolloutState"] == "COMPLETED"
        and running == desired
        and pending == 0
        and stopping == 0
        and healthy >= desired
    )
    balancers = []
    for lb in service.get("loadBalancers", []):
        group = lb["targetGroupArn"].split(":targetgroup/", 1)[-1].split("/")[0]
        descriptions = []
        for t in mine:
            value = t.get("targets", {}).get(group)
            if value:
                port, state, *reason = value.split(" ", 2)
                health = {"State": state, **({"Reason": reason[0]} if reason else {})}
                descriptions.append({"Target": {"Id": t["taskId"], "Port": int(port)}, "TargetHealth": health})
        balancers.append({**lb, "targetHealthDescriptions": descriptions})
    return {
        "serviceName": name,
        "serviceArn": service.get("serviceArn"),
        "status": service.get("status", "ACTIVE"),
        "taskDefinition": short_taskdef(service["taskDefinition"]),
        "desiredCount": desired,
        "runningCount": running,
        "pendingCount": pending,
        "healthyCount": healthy,
        "stoppingCount": stopping,
        "steady": steady,
        "autoScaling": None if target is None else {"min": target["MinCapacity"], "max": target["MaxCapacity"]},
        "lastDecision": last_decision,
        "deploymentConfiguration": service.get("deploymentConfiguration", {}),
        "deployments": deployments,
        "loadBalancers": balancers,
        "events": [
            {"id": e["id"], "createdAt": _epoch(e["createdAt"]), "service": name, "message": e["message"]}
            for e in service.get("events", [])
        ],
    }


def _chunks(items: Sequence[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# --- the client ------------------------------------------------------------------------------------


class OrchestratorClient:
    """The control plane at ``url`` (ECS + Application Auto Scaling), with the admin ``token``'s key pair."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        region: str = "us-east-1",
        cluster: str = "pixfleet",
        http: aiohttp.ClientSession | None = None,
        timeout: float = 30,
    ):
        self.url = url.rstrip("/")
        self.token = token
        self.region = region
        self.cluster = cluster
        self.http = http
        self.timeout = timeout
        self._has_check: dict[str, bool] = {}  # family:rev → its container has a health check

    @classmethod
    def from_stack(cls, stack: Mapping[str, Any], url: str | None = None, **kwargs: Any) -> OrchestratorClient:
        """The control plane of a ``stack.json``; ``url`` overrides it (the token then comes from the environment)."""
        region = stack.get("region") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        if url:
            return cls(url, os.environ.get(TOKEN_ENV), region=region, **kwargs)
        return cls(
            stack.get("ecs_endpoint_url") or stack["orchestrator_url"],
            stack.get("orchestrator_token"),
            region=region,
            **kwargs,
        )

    # --- the transport ---------------------------------------------------------------------

    def _credentials(self) -> dict[str, str]:
        if not self.token:
            return {}  # botocore's default chain (AWS_ACCESS_KEY_ID…, a profile)
        signer = admin_signer(self.token, "000000000000")
        return {"aws_access_key_id": signer.access_key_id, "aws_secret_access_key": signer.secret_access_key}

    @asynccontextmanager
    async def clients(self) -> AsyncIterator[tuple[Any, Any]]:
        """aiobotocore's ``ecs`` and ``application-autoscaling`` clients on the control plane."""
        config = client_config(timeout=min(5.0, self.timeout), read_timeout=self.timeout, attempts=2)
        kwargs = {"region_name": self.region, "endpoint_url": self.url, "config": config, **self._credentials()}
        session = _session()
        async with (
            session.create_client("ecs", **kwargs) as ecs,
            session.create_client("application-autoscaling", **kwargs) as autoscaling,
        ):
            yield ecs, autoscaling

    async def _call(self, client: Any, action: str, **params: Any) -> dict[str, Any]:
        """One API call; refusals and silence become :class:`OrchestratorError` / :class:`OrchestratorUnreachable`."""
        try:
            return dict(await getattr(client, action)(**params))
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 400)
            raise OrchestratorError(
                action, status, str(error.get("Code", "Error")), str(error.get("Message", ""))
            ) from None
        except (botocore.exceptions.BotoCoreError, aiohttp.ClientError, TimeoutError) as exc:
            raise OrchestratorUnreachable(self.url, str(exc) or type(exc).__name__) from None

    async def _get(self, path: str, timeout: float) -> str:
        limit = aiohttp.ClientTimeout(total=timeout)
        try:
            if self.http is not None:
                async with self.http.get(f"{self.url}{path}", timeout=limit) as response:
                    response.raise_for_status()
                    return await response.text()
            async with aiohttp.ClientSession() as http, http.get(f"{self.url}{path}", timeout=limit) as response:
                response.raise_for_status()
                return await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OrchestratorUnreachable(self.url, str(exc) or type(exc).__name__) from None

    # --- reads -------------------------------------------------------------------------------

    async def healthy(self) -> bool:
        try:
            await self._get("/healthz", timeout=2)
        except OrchestratorError:
            return False
        return True

    async def health(self) -> dict[str, Any]:
        """``/healthz``: ``status`` and the control loop's ``last_tick`` (epoch seconds)."""
        return dict(json.loads(await self._get("/healthz", timeout=5)))

    async def queue(self) -> dict[str, int | None] | None:
        """Queue depth from ``/metrics`` (None until the orchestrator has read the queue)."""
        return queue_depth(await self._get("/metrics", timeout=min(5.0, self.timeout)))

    async def _task_arns(self, ecs: Any, desired: str, service: str | None = None) -> list[str]:
        arns: list[str] = []
        params: dict[str, Any] = {"cluster": self.cluster, "desiredStatus": desired}
        if service:
            params["serviceName"] = service
        while True:
            page = await self._call(ecs, "list_tasks", **params)
            arns += page.get("taskArns", [])
            if not page.get("nextToken"):
                return arns
            params["nextToken"] = page["nextToken"]

    async def _describe_tasks(self, ecs: Any, arns: Sequence[str]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for chunk in _chunks(arns, 100):
            answer = await self._call(ecs, "describe_tasks", cluster=self.cluster, tasks=chunk)
            found += [task_summary(t) for t in answer.get("tasks", [])]
        return sorted(found, key=lambda t: t["createdAt"] or 0, reverse=True)

    async def _tasks(self, ecs: Any, service: str | None, status: str | None) -> list[dict[str, Any]]:
        desired = ["RUNNING", "STOPPED"] if status is None else ["STOPPED" if status == "STOPPED" else "RUNNING"]
        if status not in (None, "RUNNING", "STOPPED"):
            desired = ["RUNNING", "STOPPED"]
        arns = [arn for d in desired for arn in await self._task_arns(ecs, d, service)]
        tasks = await self._describe_tasks(ecs, arns)
        return [t for t in tasks if status is None or t["lastStatus"] == status]

    async def _checks(self, ecs: Any, revisions: Iterable[str]) -> dict[str, bool]:
        for revision in set(revisions) - set(self._has_check):
            answer = await self._call(ecs, "describe_task_definition", taskDefinition=revision)
            container = answer["taskDefinition"]["containerDefinitions"][0]
            self._has_check[revision] = "healthCheck" in container
        return self._has_check

    async def _services(self, ecs: Any, autoscaling: Any, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        arns: list[str] = []
        params: dict[str, Any] = {"cluster": self.cluster}
        while True:
            page = await self._call(ecs, "list_services", **params)
            arns += page.get("serviceArns", [])
            if not page.get("nextToken"):
                break
            params["nextToken"] = page["nextToken"]
        described: list[dict[str, Any]] = []
        for chunk in _chunks(arns, 10):
            answer = await self._call(ecs, "describe_services", cluster=self.cluster, services=chunk)
            described += answer.get("services", [])
        targets = await self._call(autoscaling, "describe_scalable_targets", ServiceNamespace="ecs")
        by_service = {t["ResourceId"].rsplit("/", 1)[-1]: t for t in targets.get("ScalableTargets", [])}
        checks = await self._checks(ecs, {t["taskDefinition"] for t in tasks})
        decisions = await self._decisions(
            autoscaling, [s["serviceName"] for s in described if s["serviceName"] in by_service]
        )
        return [
            service_summary(
                s,
                tasks,
                target=by_service.get(s["serviceName"]),
                has_check=checks,
                last_decision=decisions.get(s["serviceName"]),
            )
            for s in sorted(described, key=lambda s: s["serviceName"])
        ]

    async def _decisions(self, autoscaling: Any, services: Sequence[str]) -> dict[str, str]:
        """Each scaled service's latest scaling activity: what the scaler decided, and why."""
        found = {}
        for name in services:
            answer = await self._call(
                autoscaling,
                "describe_scaling_activities",
                ServiceNamespace="ecs",
                ResourceId=f"service/{self.cluster}/{name}",
                MaxResults=1,
                IncludeNotScaledActivities=True,
            )
            for activity in answer.get("ScalingActivities", []):
                # A not-scaled activity says why not (the ceiling); any other, what caused it.
                found[name] = activity.get("StatusMessage") if activity.get("NotScaledReasons") else activity["Cause"]
        return found

    async def status(self) -> dict[str, Any]:
        """Queue depth, every service and the tasks that have not stopped, read together."""
        try:
            queue = await self.queue()
        except (ValueError, KeyError):  # metrics of another shape: no queue line, the rest still shows
            queue = None
        async with self.clients() as (ecs, autoscaling):
            tasks = await self._tasks(ecs, None, None)
            services = await self._services(ecs, autoscaling, tasks)
        return {
            "cluster": self.cluster,
            "queue": queue,
            "services": services,
            "tasks": [t for t in tasks if t["lastStatus"] != "STOPPED"][:200],
        }

    async def services(self) -> list[dict[str, Any]]:
        async with self.clients() as (ecs, autoscaling):
            tasks = await self._tasks(ecs, None, None)
            return await self._services(ecs, autoscaling, tasks)

    async def service(self, name: str) -> dict[str, Any]:
        """One service, or OrchestratorError 400 ServiceNotFoundException naming the services there are."""
        services = await self.services()
        for service in services:
            if service["serviceName"] == name:
                return service
        known = ", ".join(s["serviceName"] for s in services)
        raise OrchestratorError(
            "describe_services", 400, "ServiceNotFoundException", f"no service {name!r}; services: {known}"
        )

    async def tasks(self, service: str | None = None, status: str | None = "RUNNING") -> list[dict[str, Any]]:
        """Tasks by last status (``RUNNING``, ``STOPPED``…; None: all), newest first."""
        async with self.clients() as (ecs, _):
            return await self._tasks(ecs, service, status)

    async def task(self, task_id: str) -> dict[str, Any]:
        """One task (DescribeTasks), or OrchestratorError when there is none."""
        async with self.clients() as (ecs, _):
            answer = await self._call(ecs, "describe_tasks", cluster=self.cluster, tasks=[task_id])
        if not answer.get("tasks"):
            raise OrchestratorError("describe_tasks", 400, "MISSING", f"no task {task_id}")
        return task_summary(answer["tasks"][0])

    async def events(self, service: str | None = None, limit: int = 30) -> list[dict[str, Any]]:
        """Service events (DescribeServices ``events``), newest first."""
        services = await self.services()
        events = [e for s in services if service in (None, s["serviceName"]) for e in s["events"]]
        return sorted(events, key=lambda e: e["createdAt"], reverse=True)[:limit]

    async def follow_events(
        self, service: str | None = None, limit: int = 30, interval: float = 1.0
    ) -> AsyncIterator[dict[str, Any]]:
        """The last ``limit`` events oldest first, then every new one as DescribeServices shows it (until cancelled)."""
        seen: set[str] = set()
        first = True
        while True:
            events = await self.events(service, limit if first else 100)
            for event in reversed(events):
                if event["id"] not in seen:
                    seen.add(event["id"])
                    yield event
            first = False
            await asyncio.sleep(interval)

    async def task_definitions(self) -> list[str]:
        """Every registered revision, ``family:revision``."""
        found: list[str] = []
        params: dict[str, Any] = {}
        async with self.clients() as (ecs, _):
            while True:
                page = await self._call(ecs, "list_task_definitions", **params)
                found += [short_taskdef(arn) for arn in page.get("taskDefinitionArns", [])]
                if not page.get("nextToken"):
                    return found
                params["nextToken"] = page["nextToken"]

    # --- changes -----------------------------------------------------------------------------

    async def update_service(
        self,
        name: str,
        *,
        desired_count: int | None = None,
        task_definition: str | None = None,
        force_new_deployment: bool = False,
    ) -> dict[str, Any]:
        """UpdateService (desired count, task definition, a forced new deployment); the service afterwards."""
        params: dict[str, Any] = {"cluster": self.cluster, "service": name}
        if desired_count is not None:
            params["desiredCount"] = desired_count
        if task_definition is not None:
            params["taskDefinition"] = task_definition
        if force_new_deployment:
            params["forceNewDeployment"] = True
        async with self.clients() as (ecs, _):
            await self._call(ecs, "update_service", **params)
        return await self.service(name)

    async def set_scaling_limits(
        self, name: str, *, minimum: int | None = None, maximum: int | None = None
    ) -> dict[str, Any]:
        """RegisterScalableTarget on the service's scalable target (only the limits given change)."""
        params: dict[str, Any] = {
            "ServiceNamespace": "ecs",
            "ResourceId": f"service/{self.cluster}/{name}",
            "ScalableDimension": DIMENSION,
        }
        if minimum is not None:
            params["MinCapacity"] = minimum
        if maximum is not None:
            params["MaxCapacity"] = maximum
        async with self.clients() as (_, autoscaling):
            await self._call(autoscaling, "register_scalable_target", **params)
        return await self.service(name)

    async def register_task_definition(self, doc: Mapping[str, Any]) -> str:
        """RegisterTaskDefinition; the new revision's ``family:revision``."""
        async with self.clients() as (ecs, _):
            answer = await self._call(ecs, "register_task_definition", **doc)
        return short_taskdef(answer["taskDefinition"]["taskDefinitionArn"])

    async def run_task(
        self, task_definition: str, count: int = 1, environment: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """RunTask: one-off tasks outside any service, their container's environment overridden."""
        async with self.clients() as (ecs, _):
            taskdef = (await self._call(ecs, "describe_task_definition", taskDefinition=task_definition))[
                "taskDefinition"
            ]
            container = taskdef["containerDefinitions"][0]["name"]
            overrides = [
                {"name": container, "environment": [{"name": k, "value": v} for k, v in (environment or {}).items()]}
            ]
            answer = await self._call(
                ecs,
                "run_task",
                cluster=self.cluster,
                taskDefinition=taskdef["taskDefinitionArn"],
                count=count,
                overrides={"containerOverrides": overrides},
                startedBy="pixfleet-cli",
            )
        failures = answer.get("failures", [])
        if failures and not answer.get("tasks"):
            reasons = "; ".join(f"{f.get('reason')}: {f.get('detail', '')}".rstrip(": ") for f in failures)
            raise OrchestratorError("run_task", 400, "TaskNotPlaced", reasons)
        return [task_summary(t) for t in answer.get("tasks", [])]

    async def stop_task(self, task_id: str, reason: str = "Stopped by pixfleet") -> dict[str, Any]:
        """StopTask: SIGTERM, then SIGKILL after the container's stopTimeout."""
        async with self.clients() as (ecs, _):
            answer = await self._call(ecs, "stop_task", cluster=self.cluster, task=task_id, reason=reason)
        return task_summary(answer["task"])

    async def kill_task(self, task_id: str) -> None:
        """SIGKILL a task from outside the control plane, as an OOM kill or ``docker kill`` would (a drill)."""
        task = await self.task(task_id)
        if task["containerId"]:
            await asyncio.to_thread(_docker_kill, task["containerId"])
        elif task["pid"]:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(task["pid"], signal.SIGKILL)
        else:
            raise OrchestratorError("kill", 400, "NotRunning", f"task {task_id} has no process to kill")


def _docker_kill(container_id: str) -> None:
    import docker  # only the Docker runtime's drills need it

    client = docker.from_env()
    try:
        client.containers.get(container_id).kill()
    except docker.errors.NotFound:
        pass  # it ended meanwhile
    except docker.errors.APIError as exc:
        if "is not running" not in str(exc):
            raise
    finally:
        client.close()
