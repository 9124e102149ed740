"""An ECS-compatible credentials endpoint: every task gets its own IAM role, and nothing else.

The AWS SDKs' container credential provider reads
``AWS_CONTAINER_CREDENTIALS_FULL_URI`` and sends ``AWS_CONTAINER_AUTHORIZATION_TOKEN``
in the ``Authorization`` header. For each task the vault assumes the task's
role (session name = task id), caches the temporary credentials, refreshes them
well before they expire, and forgets the token when the task stops. A token
only ever opens its own task's path.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiohttp import web

from infra.credentials import TemporaryCredentials

log = logging.getLogger("pixfleet.credentials")

AssumeRole = Callable[[str, str], Awaitable[TemporaryCredentials]]
REFRESH_MARGIN = timedelta(minutes=15)


@dataclass
class _Grant:
    task_id: str
    role_arn: str
    token: str
    credentials: TemporaryCredentials | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class CredentialDenied(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class CredentialVault:
    """Per-task authorization tokens and the role credentials behind them."""

    def __init__(self, assume_role: AssumeRole, *, refresh_margin: timedelta = REFRESH_MARGIN):
        self._assume_role = assume_role
        self._grants: dict[str, _Grant] = {}
        self.refresh_margin = refresh_margin
        self.refreshes = 0
        self.on_refresh: Callable[[str], None] | None = None

    def register(self, task_id: str, role_arn: str, token: str | None = None) -> str:
        """Grant ``task_id`` the role; return its authorization token (new unless given, e.g. on adoption)."""
        token = token or secrets.token_urlsafe(32)
        self._grants[task_id] = _Grant(task_id, role_arn, token)
        return token

    def revoke(self, task_id: str) -> None:
        """The task stopped: its token opens nothing any more."""
        self._grants.pop(task_id, None)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._grants

    async def credentials(self, task_id: str, authorization: str | None) -> TemporaryCredentials:
        """The task's current credentials, refreshed when they are close to expiring."""
        if not authorization:
            raise CredentialDenied(401, "missing Authorization header")
        grant = self._grants.get(task_id)
        if grant is None or not hmac.compare_digest(grant.token.encode(), authorization.encode()):
            raise CredentialDenied(403, "this token does not grant credentials for this task")
        return await self._fresh(grant)

    async def _fresh(self, grant: _Grant) -> TemporaryCredentials:
        async with grant.lock:
            creds = grant.credentials
            if creds is None or creds.expiration - datetime.now(UTC) < self.refresh_margin:
                creds = grant.credentials = await self._assume_role(grant.role_arn, grant.task_id)
                self.refreshes += 1
                if self.on_refresh:
                    self.on_refresh(grant.task_id)
                log.info("credentials for task %s refreshed (%s)", grant.task_id, grant.role_arn.rsplit("/", 1)[-1])
            return creds

    async def refresh_due(self) -> None:
        """Refresh every grant that would expire within the margin (run periodically)."""
        for grant in list(self._grants.values()):
            if grant.credentials is not None:
                try:
                    await self._fresh(grant)
                except Exception:
                    log.warning("refresh of task %s credentials failed", grant.task_id, exc_info=True)


def credentials_routes(vault: CredentialVault) -> list[web.RouteDef]:
    """``GET /v1/credentials/{task_id}`` in the container credential provider's JSON shape."""

    async def get_credentials(request: web.Request) -> web.Response:
        try:
            creds = await vault.credentials(request.match_info["task_id"], request.headers.get("Authorization"))
        except CredentialDenied as exc:
            return web.json_response({"code": "AccessDenied", "message": str(exc)}, status=exc.status)
        except Exception as exc:
            log.warning("assume-role failed: %s", exc)
            return web.json_response(
                {"code": "ServiceUnavailable", "message": "could not assume the task role"}, status=503
            )
        return web.json_response(creds.to_container_json())

    return [web.get("/v1/credentials/{task_id}", get_credentials)]
