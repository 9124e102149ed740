"""Fixtures that start the embedded stack (moto server + API + worker processes) for end-to-end tests."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import get_session
from PIL import Image

from infra.stack import StackSpec
from pipeline.aws import credential_kwargs
from pixfleet.stack import EmbeddedConfig, EmbeddedStack

MiB = 1024 * 1024


class StackClient:
    """HTTP + admin (bootstrap-credential) access to a running embedded stack, for assertions."""

    def __init__(self, stack: EmbeddedStack, http: aiohttp.ClientSession):
        self.stack = stack
        self.http = http
        self.api = stack.api_url

    def admin(self, service: str) -> Any:
        """A client with the bootstrap (admin) keys — the test's view of the world, not a task's."""
        return get_session().create_client(
            service,
            region_name=self.stack.aws.region,
            endpoint_url=self.stack.aws.endpoint_url,
            **credential_kwargs(self.stack.bootstrap),
        )

    async def upload(
        self,
        data: bytes,
        *,
        preset: str = "web",
        filename: str = "image",
        content_type: str = "application/octet-stream",
    ) -> tuple[int, Any]:
        form = aiohttp.FormData()
        form.add_field("file", data, filename=filename, content_type=content_type)
        async with self.http.post(f"{self.api}/v1/images", params={"preset": preset}, data=form) as r:
            return r.status, await r.json()

    async def job(self, job_id: str, *, missing_ok: bool = False) -> dict[str, Any]:
        async with self.http.get(f"{self.api}/v1/jobs/{job_id}") as r:
            if missing_ok and r.status == 404:
                return {"job_id": job_id, "status": "unknown"}
            assert r.status == 200, await r.text()
            return await r.json()

    async def wait(
        self, job_id: str, timeout: float = 60.0, until: tuple[str, ...] = ("succeeded", "failed")
    ) -> dict[str, Any]:
        """Poll the job's status endpoint (the API's own event source) until it reaches ``until``."""
        deadline = time.monotonic() + timeout
        while True:
            job = await self.job(job_id, missing_ok=True)
            if job["status"] in until:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s")
            await asyncio.sleep(0.1)

    async def fetch_image(self, url: str) -> Image.Image:
        async with self.http.get(url) as r:
            assert r.status == 200
            im = Image.open(io.BytesIO(await r.read()))
            im.load()
            return im

    async def keys(self, bucket: str, prefix: str = "") -> list[str]:
        async with self.admin("s3") as s3:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return [o["Key"] async for page in pages for o in page.get("Contents", [])]

    async def multipart_uploads(self, bucket: str) -> list[dict[str, Any]]:
        async with self.admin("s3") as s3:
            return (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", [])

    async def dlq_messages(self, wait: float = 5) -> list[dict[str, Any]]:
        async with self.admin("sqs") as sqs:
            got = await sqs.receive_message(
                QueueUrl=self.stack.aws.dlq_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=int(wait),
                MessageAttributeNames=["All"],
                VisibilityTimeout=0,
            )
            return got.get("Messages", [])

    async def send_raw(self, body: str | dict[str, Any]) -> None:
        async with self.admin("sqs") as sqs:
            await sqs.send_message(
                QueueUrl=self.stack.aws.queue_url, MessageBody=body if isinstance(body, str) else json.dumps(body)
            )


@pytest.fixture(scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedStack]:
    """The shared embedded stack: moto, the orchestrator, the API (12 MiB limit, 5 MiB parts) and two workers."""
    config = EmbeddedConfig(
        state_dir=tmp_path_factory.mktemp("stack"),
        workers=2,
        max_workers=2,
        api_port=0,
        spec=StackSpec(visibility_timeout=30),
        api_env={
            "PIXFLEET_MAX_BYTES": str(12 * MiB),
            "PIXFLEET_API_PART_SIZE": str(5 * MiB),
            "PIXFLEET_MAX_PIXELS": str(40_000_000),
        },
        worker_env={
            "PIXFLEET_MAX_BYTES": str(12 * MiB),
            "PIXFLEET_MAX_PIXELS": str(40_000_000),
            "PIXFLEET_WORKER_RETRY_BASE": "0.5",
        },
    )
    async with EmbeddedStack(config) as running:
        yield running


@pytest.fixture(scope="session")
async def client(stack: EmbeddedStack) -> AsyncIterator[StackClient]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        yield StackClient(stack, http)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


async def queue_drained(client: StackClient, timeout: float = 60.0) -> None:
    """Wait until the job queue holds no visible and no in-flight message."""
    deadline = time.monotonic() + timeout
    async with client.admin("sqs") as sqs:
        while True:
            attrs = (
                await sqs.get_queue_attributes(
                    QueueUrl=client.stack.aws.queue_url,
                    AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                )
            )["Attributes"]
            if int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"]) == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"queue not drained after {timeout}s: {attrs}")
            await asyncio.sleep(0.2)
