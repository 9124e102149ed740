"""aiobotocore clients built from settings (no module-level clients).

Credentials come from botocore's default chain. In a task that is the container
credential provider (``AWS_CONTAINER_CREDENTIALS_FULL_URI`` plus
``AWS_CONTAINER_AUTHORIZATION_TOKEN``), served by the orchestrator with the
task's own role; explicit keys are only passed by tools and tests.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from pipeline.settings import AwsSettings


def client_config(*, timeout: float = 5.0, read_timeout: float = 30.0, attempts: int = 3, pool: int = 50) -> AioConfig:
    """A client config with short connect timeouts and botocore's bounded "standard" retries."""
    return AioConfig(
        connect_timeout=timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": attempts, "mode": "standard"},
        max_pool_connections=pool,
        s3={"addressing_style": "path"},
        signature_version="s3v4",
        # CRC checksums only where an API requires them: they cost CPU on every image
        # written and some emulators do not support the newer defaults.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def credential_kwargs(credentials: Mapping[str, str] | None) -> dict[str, str]:
    """botocore keyword arguments for explicit credentials (``None`` → default chain)."""
    if not credentials:
        return {}
    kwargs = {
        "aws_access_key_id": credentials["access_key_id"],
        "aws_secret_access_key": credentials["secret_access_key"],
    }
    if credentials.get("session_token"):
        kwargs["aws_session_token"] = credentials["session_token"]
    return kwargs


@asynccontextmanager
async def aws_clients(
    aws: AwsSettings,
    *services: str,
    config: AioConfig | None = None,
    credentials: Mapping[str, str] | None = None,
) -> AsyncIterator[Any]:
    """Open one client per service name; yields a single client or a tuple of them."""
    session = get_session()
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                session.create_client(
                    service,
                    region_name=aws.region,
                    endpoint_url=aws.endpoint_url,
                    config=config or client_config(),
                    **credential_kwargs(credentials),
                )
            )
            for service in services
        ]
        yield clients[0] if len(clients) == 1 else tuple(clients)


# --- what a queue says about itself ------------------------------------------------------------

_DEPTH_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


class QueueDepth(NamedTuple):
    """A queue's approximate message counts: waiting, received but not deleted, delayed."""

    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        return self.visible + self.in_flight + self.delayed


async def queue_depth(sqs: Any, queue_url: str) -> QueueDepth:
    """One ``GetQueueAttributes`` call: the queue's depth (the API's fleet view, the scaler, the recorder)."""
    answer = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=list(_DEPTH_ATTRIBUTES))
    attrs = answer.get("Attributes", {})
    return QueueDepth(*(int(attrs.get(name, 0)) for name in _DEPTH_ATTRIBUTES))


NO_REDRIVE_RECEIVE_COUNT = 3  # deliveries a worker allows a job when its queue has no redrive policy


@dataclass(frozen=True)
class QueueConfig:
    """What the stack set on a queue; services read it at startup, so no task definition holds a copy."""

    visibility_timeout: int
    max_receive_count: int  # the redrive policy's maxReceiveCount (NO_REDRIVE_RECEIVE_COUNT without one)


async def queue_config(sqs: Any, queue_url: str) -> QueueConfig:
    """The queue's ``VisibilityTimeout`` and its ``RedrivePolicy``'s ``maxReceiveCount``."""
    answer = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"])
    attrs = answer.get("Attributes", {})
    redrive = json.loads(attrs.get("RedrivePolicy") or "{}")
    return QueueConfig(
        visibility_timeout=int(attrs.get("VisibilityTimeout", 30)),  # 30 s: SQS's default
        max_receive_count=int(redrive.get("maxReceiveCount", NO_REDRIVE_RECEIVE_COUNT)),
    )
