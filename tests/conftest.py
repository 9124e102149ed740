"""Shared fixtures: one real moto server over HTTP, provisioned, with IAM enforced.

* ``emulator`` (session): a started ``MotoServer`` with the pixfleet stack and IAM
  enforcement; ``.url``, ``.region``, ``.outputs`` (StackOutputs), ``.bootstrap``
  (the admin user's keys — for test setup only, never what a service uses).
* ``role_session`` (session): ``await role_session("api" | "worker" | "orchestrator")``
  → TemporaryCredentials of that role, assumed with the bootstrap keys.
* ``aws_client`` (session): ``async with aws_client("s3", creds) as s3: ...`` — an
  aiobotocore client against the emulator, signed with ``creds`` (optional AioConfig).
* ``take_messages`` (session): ``await take_messages(queue_url, creds, wanted)`` → the
  bodies (JSON-decoded when possible) of the visible messages ``wanted`` accepts,
  deleted from the queue; the others are made visible again for their owners.
* ``fresh_moto``: a factory of private, un-enforced moto servers, stopped at teardown.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from infra.credentials import Credentials, TemporaryCredentials, assume_role, client_kwargs
from infra.emulator import ORCHESTRATOR_SESSION_NAME, MotoServer, start_provisioned_emulator
from infra.provision import StackOutputs

REGION = "us-east-1"

# The embedded-stack fixtures (moto + API + worker processes) live in their own module.
pytest_plugins = ["stack_fixtures", "compose_fixtures"]


@dataclass(frozen=True)
class Emulator:
    """A running, provisioned, IAM-enforcing moto server."""

    url: str
    region: str
    outputs: StackOutputs
    bootstrap: dict[str, str]
    server: MotoServer


@pytest.fixture(scope="session")
async def emulator(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Emulator]:
    server, outputs, creds = await start_provisioned_emulator(tmp_path_factory.mktemp("emulator"), REGION)
    try:
        yield Emulator(url=server.url, region=REGION, outputs=outputs, bootstrap=creds, server=server)
    finally:
        await asyncio.to_thread(server.stop)


@pytest.fixture(scope="session")
def role_session(emulator: Emulator) -> Callable[[str], Awaitable[TemporaryCredentials]]:
    """Temporary credentials per role, assumed once per test session.

    The orchestrator's session is named as moto's trust matching requires, so its
    credentials can assume the api and worker roles in turn.
    """
    sessions: dict[str, TemporaryCredentials] = {}
    lock = asyncio.Lock()

    async def credentials_for(role: str) -> TemporaryCredentials:
        async with lock:
            if role not in sessions:
                name = ORCHESTRATOR_SESSION_NAME if role == "orchestrator" else f"pytest-{role}"
                sessions[role] = await assume_role(
                    emulator.url, emulator.region, emulator.bootstrap, emulator.outputs.role_arns[role], name
                )
            return sessions[role]

    return credentials_for


@pytest.fixture(scope="session")
def aws_client(emulator: Emulator) -> Callable[..., Any]:
    """``aws_client(service, creds[, config])`` → an async context manager yielding an aiobotocore client."""
    session = get_session()

    def open_client(service: str, creds: Credentials, config: AioConfig | None = None) -> Any:
        return session.create_client(service, config=config, **client_kwargs(emulator.url, emulator.region, creds))

    return open_client


@pytest.fixture(scope="session")
def take_messages(aws_client: Callable[..., Any]) -> Callable[..., Awaitable[list[Any]]]:
    async def take(queue_url: str, creds: Credentials, wanted: Callable[[Any], bool]) -> list[Any]:
        taken: list[Any] = []
        others: list[str] = []
        async with aws_client("sqs", creds) as sqs:
            while messages := (
                await sqs.receive_message(
                    QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=30, WaitTimeSeconds=0
                )
            ).get("Messages"):
                for message in messages:
                    body = _decoded(message["Body"])
                    if wanted(body):
                        taken.append(body)
                        await sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                    else:
                        others.append(message["ReceiptHandle"])
            for handle in others:
                await sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=handle, VisibilityTimeout=0)
        return taken

    return take


def _decoded(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body


@pytest.fixture
def fresh_moto() -> Iterator[Callable[[], MotoServer]]:
    """``fresh_moto()`` → a started private moto server without IAM enforcement."""
    servers: list[MotoServer] = []

    def start() -> MotoServer:
        server = MotoServer(region=REGION).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
