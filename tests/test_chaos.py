"""Faults, measured: the soak (`pixfleet chaos`, short) and an API killed mid-upload. Real processes, real
SIGKILL and SIGSTOP, moto over HTTP; nothing mocked."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

import images
from pixfleet.stack import EmbeddedConfig, EmbeddedStack
from stack_fixtures import MiB, StackClient
from test_worker_lifecycle import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


def test_short_soak_loses_nothing(tmp_path: Path) -> None:
    """~200 jobs while busy workers are SIGKILLed every 2-3 s and the emulator is SIGSTOPped for 5 s."""
    report_path = tmp_path / "chaos.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pixfleet",
            "chaos",
            "--jobs",
            "200",
            "--rate",
            "20",
            "--kill-every",
            "2-3",
            "--min-kills",
            "6",
            "--pause",
            "5",
            "--json",
            str(report_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert report_path.exists(), run.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert run.returncode == 0, (report["goals"], run.stdout[-3000:])
    assert report["accepted"] == 200 and report["succeeded"] + report["failed"] == 200
    assert (
        report["lost"] == [] and report["stuck"] == [] and report["bad_outputs"] == [] and report["extra_objects"] == []
    )
    assert report["kills"] >= 6 and report["pause_s"] is not None
    assert all(code != "no reason" for code in report["failed_by_code"])
    assert max(len(line) for line in run.stdout.splitlines()) <= 80


@pytest.fixture
async def sweeping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StackClient]:
    """A stack whose emulator runs the lifecycle rule on a 6-second "day" (a one-day rule acts in seconds)."""
    monkeypatch.setenv("PIXFLEET_EMULATOR_DAY_SECONDS", "6")
    config = EmbeddedConfig(
        state_dir=tmp_path / "sweeping",
        workers=1,
        max_workers=1,
        api_port=0,
        api_env={"PIXFLEET_API_PART_SIZE": str(5 * MiB)},
        load_balancer=False,  # one API task, killed mid-upload (behind the LB: tests/test_lb_stack.py)
    )
    async with EmbeddedStack(config) as stack, aiohttp.ClientSession() as http:
        yield StackClient(stack, http)


async def test_an_api_killed_mid_upload_leaves_nothing_behind(sweeping: StackClient) -> None:
    stack = sweeping.stack
    (api,) = await stack.tasks("api")
    stalled = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield images.photo_jpeg(64, 64)
        for _ in range(24):
            yield b"\0" * (256 * 1024)  # 6 MiB: the first 5 MiB part goes to S3
        stalled.set()
        await asyncio.sleep(300)  # … and the rest does not come (bounded, so nothing can hang for good)

    before = set(await sweeping.keys(stack.aws.input_bucket, "uploads/"))
    upload = asyncio.ensure_future(
        sweeping.http.post(f"{sweeping.api}/v1/images", data=body(), headers={"Content-Type": "image/jpeg"})
    )

    async def part_stored() -> bool:
        return stalled.is_set() and bool(await sweeping.multipart_uploads(stack.aws.input_bucket))

    await wait_for(part_stored, timeout=60, what="a multipart upload in progress")
    await stack.control.kill_task(api["taskId"])  # SIGKILL: no abort, no goodbye
    with pytest.raises(aiohttp.ClientError):
        await asyncio.wait_for(upload, 120)

    async def swept() -> bool:
        return not await sweeping.multipart_uploads(stack.aws.input_bucket)

    await wait_for(swept, timeout=60, what="the lifecycle rule to abort the orphaned multipart upload")
    assert set(await sweeping.keys(stack.aws.input_bucket, "uploads/")) == before  # nothing half-stored
    async with sweeping.admin("sqs") as sqs:
        attrs = (await sqs.get_queue_attributes(QueueUrl=stack.aws.queue_url, AttributeNames=["All"]))["Attributes"]
    assert (
        int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"]) == 0
    )  # nothing queued
    async with sweeping.admin("s3") as s3:
        rules = (await s3.get_bucket_lifecycle_configuration(Bucket=stack.aws.input_bucket))["Rules"]
    assert rules[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    await stack.wait_steady()  # the API service replaced its task (on a new port: api_port=0)
    sweeping.api = stack.api_url
    status, answer = await sweeping.upload(images.photo_jpeg(200, 150), preset="thumbs")
    assert status == 202, answer
