"""No job vanishes into the DLQ: the dead-letter recorder, `pixfleet dlq list|redrive`, and the emulator's
StartMessageMoveTask, all against real servers (moto over HTTP, real worker and recorder processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

import images
from infra.stack import StackSpec
from pipeline.messages import JobMessage, new_job_id, utcnow_iso
from pixfleet.stack import EmbeddedConfig, EmbeddedStack
from stack_fixtures import StackClient
from test_worker_lifecycle import manifest, submit_slow, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def fragile(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[StackClient]:
    """One worker, one job at a time, two deliveries per message, a quick dead-letter recorder."""
    config = EmbeddedConfig(
        state_dir=tmp_path_factory.mktemp("fragile"),
        workers=1,
        max_workers=1,
        api_port=0,
        spec=StackSpec(visibility_timeout=5, max_receive_count=2),
        worker_env={"PIXFLEET_WORKER_CONCURRENCY": "1"},
        deadletter_env={"PIXFLEET_DEADLETTER_POLL_INTERVAL": "0.5"},
    )
    async with EmbeddedStack(config) as stack, aiohttp.ClientSession() as http:
        yield StackClient(stack, http)


def cli(stack: EmbeddedStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIXFLEET_STATE_DIR": str(stack.state_dir), "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-m", "pixfleet", *args], env=env, capture_output=True, text=True, timeout=120
    )


async def test_a_job_killed_on_every_delivery_ends_failed_and_can_be_redriven(fragile: StackClient) -> None:
    stack = fragile.stack
    job_id = await submit_slow(fragile)
    killed: set[str] = set()  # worker ids ("worker-" + task id prefix) already killed

    async def failed_or_running_elsewhere() -> dict[str, Any] | None:
        job = await fragile.job(job_id, missing_ok=True)
        if job["status"] == "failed":
            return job
        record = await manifest(fragile, job_id) if job["status"] == "processing" else None
        if record and record["worker_id"] not in killed:
            holder = [t for t in await stack.tasks("worker") if f"worker-{t['taskId'][:8]}" == record["worker_id"]]
            if holder:
                killed.add(record["worker_id"])
                await stack.control.kill_task(holder[0]["taskId"])
        return None

    job = await wait_for(failed_or_running_elsewhere, timeout=180, what="the job to exhaust its deliveries")
    assert job["error"]["code"] == "retries_exhausted", job
    assert "dead-letter queue" in job["error"]["message"]
    record = await manifest(fragile, job_id)
    outcomes = [a["outcome"] for a in record["attempts"]]
    assert outcomes and set(outcomes) == {"interrupted"}, record["attempts"]
    assert all(a["worker_id"] for a in record["attempts"])

    # It is in the DLQ, visible to `pixfleet dlq list`, and stays there.
    listed = cli(stack, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [r for r in json.loads(listed.stdout) if r["job_id"] == job_id]
    assert rows, (listed.stdout, listed.stderr)
    assert rows[0]["status"] == "failed" and rows[0]["error"]["code"] == "retries_exhausted"
    table = cli(stack, "dlq", "list")
    assert job_id[:12] in table.stdout and "retries_exhausted" in table.stdout
    assert max(len(line) for line in table.stdout.splitlines()) <= 80

    # After "the fix" (nobody kills the worker any more), a redrive renders it.
    redriven = cli(stack, "dlq", "redrive")
    assert redriven.returncode == 0, redriven.stderr
    assert "moved 1 message(s)" in redriven.stdout
    job = await fragile.wait(job_id, timeout=120, until=("succeeded",))
    assert [o["variant"] for o in job["outputs"]] == ["big0", "big1", "big2"]
    after = json.loads(cli(stack, "dlq", "list", "--json").stdout)
    assert not [r for r in after if r["job_id"] == job_id]


async def admin_put_manifest(client: StackClient, job_id: str, doc: dict[str, Any]) -> None:
    async with client.admin("s3") as s3:
        await s3.put_object(
            Bucket=client.stack.aws.output_bucket, Key=f"results/{job_id}/manifest.json", Body=json.dumps(doc).encode()
        )


async def admin_dead_letter(client: StackClient, body: str) -> None:
    async with client.admin("sqs") as sqs:
        await sqs.send_message(QueueUrl=client.stack.aws.dlq_url, MessageBody=body)


def job_body(job_id: str, key: str = "uploads/x/original") -> str:
    return JobMessage(
        job_id=job_id, bucket="pixfleet-input", key=key, preset="thumbs", submitted_at=utcnow_iso()
    ).to_json()


async def test_the_recorder_fails_unfinished_jobs_and_leaves_finished_ones(fragile: StackClient) -> None:
    unfinished, finished, never_started = new_job_id(), new_job_id(), new_job_id()
    await admin_put_manifest(
        fragile,
        unfinished,
        {
            "job_id": unfinished,
            "status": "processing",
            "attempt": 2,
            "worker_id": "worker-dead",
            "started_at": utcnow_iso(),
            "attempts": [{"attempt": 1, "worker_id": "worker-gone", "outcome": "interrupted"}],
        },
    )
    await admin_put_manifest(fragile, finished, {"job_id": finished, "status": "succeeded", "attempt": 1})
    for job_id in (unfinished, finished, never_started):
        await admin_dead_letter(fragile, job_body(job_id))
    await admin_dead_letter(fragile, "not a job at all")

    async def recorded() -> bool:
        return (await fragile.job(unfinished, missing_ok=True))["status"] == "failed" and (
            await fragile.job(never_started, missing_ok=True)
        )["status"] == "failed"

    await wait_for(recorded, timeout=60, what="the recorder to mark the unfinished jobs failed")
    failed = await manifest(fragile, unfinished)
    assert failed["error"]["code"] == "retries_exhausted"
    assert [a["outcome"] for a in failed["attempts"]] == ["interrupted", "interrupted"]
    assert [a["worker_id"] for a in failed["attempts"]] == ["worker-gone", "worker-dead"]
    assert (await manifest(fragile, never_started))["error"]["code"] == "retries_exhausted"
    assert (await manifest(fragile, finished))["status"] == "succeeded"  # never overwritten
    # The recorder never deletes: all four are still there for `dlq list`.
    rows = json.loads(cli(fragile.stack, "dlq", "list", "--json").stdout)
    ids = {r["job_id"] for r in rows}
    assert {unfinished, finished, never_started} <= ids and None in ids
    # Leave the DLQ as the other test expects it: move these four out of the way.
    async with fragile.admin("sqs") as sqs:
        while messages := (await sqs.receive_message(QueueUrl=fragile.stack.aws.dlq_url, MaxNumberOfMessages=10)).get(
            "Messages"
        ):
            for m in messages:
                await sqs.delete_message(QueueUrl=fragile.stack.aws.dlq_url, ReceiptHandle=m["ReceiptHandle"])


async def test_a_permanently_failed_job_is_dead_lettered_once_and_listed_with_its_reason(fragile: StackClient) -> None:
    status, body = await fragile.upload(images.truncated_jpeg(), preset="thumbs", filename="poison.jpg")
    assert status == 202, body
    job = await fragile.wait(body["job_id"])
    assert job["status"] == "failed" and job["error"]["code"] == "corrupt_image"
    rows = json.loads(cli(fragile.stack, "dlq", "list", "--json").stdout)
    (row,) = [r for r in rows if r["job_id"] == body["job_id"]]
    assert row["dead_lettered_by"] == "worker" and row["error"]["code"] == "corrupt_image"
