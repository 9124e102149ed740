"""The credential vault's rules: per-task tokens, refresh before expiry, revocation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from infra.credentials import TemporaryCredentials
from services.orchestrator.credentials import CredentialDenied, CredentialVault


class Issuer:
    """Hands out numbered credentials with a chosen lifetime (the vault's assume-role dependency)."""

    def __init__(self, lifetime: timedelta):
        self.lifetime = lifetime
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, role_arn: str, session_name: str) -> TemporaryCredentials:
        self.calls.append((role_arn, session_name))
        n = len(self.calls)
        return TemporaryCredentials(f"AKIA{n}", f"secret{n}", f"token{n}", datetime.now(UTC) + self.lifetime, role_arn)


async def test_credentials_are_cached_until_close_to_expiry() -> None:
    issuer = Issuer(timedelta(hours=1))
    vault = CredentialVault(issuer)
    token = vault.register("task-a", "arn:aws:iam::1:role/worker")
    first = await vault.credentials("task-a", token)
    again = await vault.credentials("task-a", token)
    assert first is again and issuer.calls == [("arn:aws:iam::1:role/worker", "task-a")]  # session name = task id


async def test_credentials_are_refreshed_before_they_expire() -> None:
    issuer = Issuer(timedelta(minutes=10))  # inside the 15-minute refresh margin
    vault = CredentialVault(issuer)
    token = vault.register("task-a", "arn:aws:iam::1:role/worker")
    first = await vault.credentials("task-a", token)
    await vault.refresh_due()
    second = await vault.credentials("task-a", token)
    assert first.access_key_id != second.access_key_id
    assert vault.refreshes >= 3


@pytest.mark.parametrize(
    ("name", "task", "token", "status"),
    [
        ("no token", "task-a", None, 401),
        ("wrong token", "task-a", "guess", 403),
        ("another task's token", "task-a", "TOKEN_B", 403),
        ("unknown task", "task-z", "TOKEN_A", 403),
    ],
)
async def test_refusals(name: str, task: str, token: str | None, status: int) -> None:
    vault = CredentialVault(Issuer(timedelta(hours=1)))
    tokens = {"TOKEN_A": vault.register("task-a", "arn:r/a"), "TOKEN_B": vault.register("task-b", "arn:r/b")}
    with pytest.raises(CredentialDenied) as info:
        await vault.credentials(task, tokens.get(token, token) if token else None)
    assert info.value.status == status


async def test_a_revoked_token_opens_nothing() -> None:
    vault = CredentialVault(Issuer(timedelta(hours=1)))
    token = vault.register("task-a", "arn:r/a")
    await vault.credentials("task-a", token)
    vault.revoke("task-a")
    with pytest.raises(CredentialDenied):
        await vault.credentials("task-a", token)
