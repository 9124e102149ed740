"""The one client of the orchestrator's control API, for every tool (CLI, embedded stack, load tests, benchmarks).

Each method is one call a tool needs and returns the orchestrator's JSON as plain data; rendering is
the caller's business (``pixfleet.fleet_view``). :meth:`OrchestratorClient.request` is the whole
transport: today HTTP+JSON against ``/v1/…`` with the admin token as a bearer token. When the control
plane speaks the ECS API, the methods keep their names and the transport becomes boto3's ``ecs`` client.

Errors: :class:`OrchestratorError` for an answer that refuses the call (its HTTP status, code and
message), :class:`OrchestratorUnreachable` when there is no answer at all. Both are ``RuntimeError``s.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import aiohttp

TOKEN_ENV = "PIXFLEET_ORCHESTRATOR_TOKEN"


class OrchestratorError(RuntimeError):
    """The orchestrator refused a call."""

    def __init__(self, method: str, path: str, status: int, code: str, message: str):
        super().__init__(f"{method} {path}: {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class OrchestratorUnreachable(OrchestratorError):
    """No answer from the orchestrator (connection refused, timeout, not JSON)."""

    def __init__(self, url: str, reason: str):
        RuntimeError.__init__(self, f"cannot reach the orchestrator at {url}: {reason}")
        self.status, self.code, self.message = 0, "unreachable", reason


class OrchestratorClient:
    """Calls of the orchestrator's control API at ``url`` (changes need the admin ``token``).

    ``http``: a session to reuse (the caller closes it); without one, each call opens its own.
    """

    def __init__(
        self, url: str, token: str | None = None, *, http: aiohttp.ClientSession | None = None, timeout: float = 30
    ):
        self.url = url.rstrip("/")
        self.token = token
        self.http = http
        self.timeout = timeout

    @classmethod
    def from_stack(cls, stack: dict[str, Any], url: str | None = None, **kwargs: Any) -> OrchestratorClient:
        """The orchestrator of a ``stack.json``; ``url`` overrides it (the token then comes from the environment)."""
        if url:
            return cls(url, os.environ.get(TOKEN_ENV), **kwargs)
        return cls(stack["orchestrator_url"], stack.get("orchestrator_token"), **kwargs)

    # --- the transport ---------------------------------------------------------------------

    async def request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        """One call: ``method path`` with a JSON ``body``; the JSON answer, or an OrchestratorError."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        limit = aiohttp.ClientTimeout(total=timeout or self.timeout)
        try:
            if self.http is not None:
                return await self._send(self.http, method, path, body, headers, limit)
            async with aiohttp.ClientSession() as http:
                return await self._send(http, method, path, body, headers, limit)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OrchestratorUnreachable(self.url, str(exc) or type(exc).__name__) from None

    async def _send(
        self,
        http: aiohttp.ClientSession,
        method: str,
        path: str,
        body: Any,
        headers: dict[str, str],
        limit: aiohttp.ClientTimeout,
    ) -> Any:
        async with http.request(method, f"{self.url}{path}", json=body, headers=headers, timeout=limit) as response:
            try:
                data = await response.json(content_type=None)
            except ValueError:
                raise OrchestratorUnreachable(
                    self.url, f"{method} {path}: answer {response.status} is not JSON"
                ) from None
            if response.status >= 400:
                error = (data or {}).get("error", {}) if isinstance(data, dict) else {}
                raise OrchestratorError(
                    method,
                    path,
                    response.status,
                    str(error.get("code", "error")),
                    str(error.get("message", response.reason)),
                )
            return data

    # --- reads -------------------------------------------------------------------------------

    async def healthy(self) -> bool:
        try:
            await self.request("GET", "/healthz", timeout=2)
        except OrchestratorError:
            return False
        return True

    async def status(self) -> dict[str, Any]:
        """Queue depth, every service and the tasks that have not stopped: one consistent read."""
        return await self.request("GET", "/v1/status")

    async def services(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/v1/services"))["services"]

    async def service(self, name: str) -> dict[str, Any]:
        """One service, or OrchestratorError 404 naming the services there are."""
        services = await self.services()
        for service in services:
            if service["serviceName"] == name:
                return service
        known = ", ".join(s["serviceName"] for s in services)
        raise OrchestratorError("GET", "/v1/services", 404, "not_found", f"no service {name!r}; services: {known}")

    async def tasks(self, service: str | None = None, status: str | None = "RUNNING") -> list[dict[str, Any]]:
        query = urlencode({k: v for k, v in (("service", service), ("status", status)) if v})
        return (await self.request("GET", f"/v1/tasks?{query}"))["tasks"]

    async def events(self, service: str | None = None, limit: int = 30) -> list[dict[str, Any]]:
        """Service events, newest first."""
        return (await self.request("GET", f"/v1/events?{self._events_query(service, limit)}"))["events"]

    async def follow_events(self, service: str | None = None, limit: int = 30) -> AsyncIterator[dict[str, Any]]:
        """The last ``limit`` events oldest first, then every new one as it happens (until cancelled)."""
        url = f"{self.url}/v1/events?{self._events_query(service, limit)}&follow=1"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as http,
                http.get(url) as response,
            ):
                async for line in response.content:
                    if line.startswith(b"data: "):
                        yield json.loads(line[6:])
        except aiohttp.ClientError as exc:
            raise OrchestratorUnreachable(self.url, str(exc) or type(exc).__name__) from None

    @staticmethod
    def _events_query(service: str | None, limit: int) -> str:
        return urlencode({"limit": limit, **({"service": service} if service else {})})

    async def task_definitions(self) -> list[str]:
        """Every registered revision, ``family:revision``."""
        return (await self.request("GET", "/v1/task-definitions"))["taskDefinitions"]

    # --- changes (admin token) ---------------------------------------------------------------

    async def update_service(
        self,
        name: str,
        *,
        desired_count: int | None = None,
        minimum: int | None = None,
        maximum: int | None = None,
        task_definition: str | None = None,
    ) -> dict[str, Any]:
        """Change a service's desired count, scaling limits or task definition; the service afterwards."""
        body = {
            key: value
            for key, value in (
                ("desiredCount", desired_count),
                ("min", minimum),
                ("max", maximum),
                ("taskDefinition", task_definition),
            )
            if value is not None
        }
        return await self.request("PATCH", f"/v1/services/{name}", body)

    async def register_task_definition(self, doc: dict[str, Any]) -> str:
        """Register a RegisterTaskDefinition document; its ``family:revision``."""
        return (await self.request("POST", "/v1/task-definitions", doc))["taskDefinition"]

    async def run_task(
        self, task_definition: str, count: int = 1, environment: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """One-off tasks outside any service."""
        body = {"taskDefinition": task_definition, "count": count, "environment": environment or {}}
        return (await self.request("POST", "/v1/tasks", body))["tasks"]

    async def kill_task(self, task_id: str) -> None:
        """SIGKILL a task (a failure drill)."""
        await self.request("POST", f"/v1/tasks/{task_id}/kill")
