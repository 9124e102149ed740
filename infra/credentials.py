"""Credentials for pixfleet's clients: static keys, and temporary role credentials from STS.

The orchestrator plays the part of the ECS agent: it assumes a task role
(:func:`assume_role`) and hands the result to the task in the shape of the ECS
container-credentials endpoint (:meth:`TemporaryCredentials.to_container_json`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, UTC
from typing import Any

from aiobotocore.session import get_session

from pipeline.aws import credential_kwargs

# Any keys do before moto enforces IAM; aiobotocore still needs some to sign with.
EMULATOR_DUMMY_CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}


@dataclass(frozen=True)
class TemporaryCredentials:
    """Credentials of one assumed-role session."""

    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: datetime
    role_arn: str = ""

    def as_dict(self) -> dict[str, str]:
        """The ``{"access_key_id", "secret_access_key", "session_token"}`` mapping clients take."""
        return {
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "session_token": self.session_token,
        }

    def to_container_json(self) -> dict[str, str]:
        """The body an ECS container-credentials endpoint answers with (what botocore reads)."""
        return {
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "Token": self.session_token,
            "Expiration": _iso8601_z(self.expiration),
            "RoleArn": self.role_arn,
        }


Credentials = Mapping[str, str] | TemporaryCredentials


def client_kwargs(endpoint_url: str | None, region: str, credentials: Credentials | None) -> dict[str, Any]:
    """Keyword arguments for ``session.create_client``.

    ``credentials`` is a mapping with ``access_key_id``, ``secret_access_key`` and
    optionally ``session_token``, or :class:`TemporaryCredentials`. Without
    credentials, real AWS uses the default provider chain, and an emulator gets
    dummy keys (accepted until IAM is enforced).
    """
    kwargs: dict[str, Any] = {"region_name": region}
    if endpoint_url is not None:
        kwargs["endpoint_url"] = endpoint_url
        if credentials is None:
            credentials = EMULATOR_DUMMY_CREDENTIALS
    if credentials is not None:
        creds = credentials.as_dict() if isinstance(credentials, TemporaryCredentials) else credentials
        kwargs.update(credential_kwargs(creds))
    return kwargs


async def assume_role(
    endpoint_url: str | None,
    region: str,
    credentials: Credentials | None,
    role_arn: str,
    session_name: str,
    duration_seconds: int = 3600,
) -> TemporaryCredentials:
    """Assume ``role_arn`` with ``credentials`` and return the session's temporary credentials.

    Errors from STS (``AccessDenied`` when the trust policy or the caller's policy
    says no) propagate as botocore ``ClientError``; classify them with
    :func:`pipeline.errors.classify`.
    """
    session = get_session()
    async with session.create_client("sts", **client_kwargs(endpoint_url, region, credentials)) as sts:
        return await assume_role_with(sts, role_arn, session_name, duration_seconds)


async def assume_role_with(
    sts: Any, role_arn: str, session_name: str, duration_seconds: int = 3600
) -> TemporaryCredentials:
    """:func:`assume_role` through an STS client the caller keeps (creating one per call costs CPU)."""
    answer = await sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name, DurationSeconds=duration_seconds)
    creds = answer["Credentials"]
    return TemporaryCredentials(
        access_key_id=creds["AccessKeyId"],
        secret_access_key=creds["SecretAccessKey"],
        session_token=creds["SessionToken"],
        expiration=_aware(creds["Expiration"]),
        role_arn=role_arn,
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso8601_z(moment: datetime) -> str:
    return _aware(moment).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
