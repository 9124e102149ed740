"""Worker tasks dying, being replaced and being drained by the orchestrator: no job lost, one set of outputs."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

import images
from infra.stack import StackSpec
from pixfleet.stack import EmbeddedConfig, EmbeddedStack
from stack_fixtures import StackClient

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Several large AVIF encodes: seconds of real CPU work, so a job is reliably caught mid-way.
SLOW_OPERATIONS = [
    {"name": f"big{i}", "width": 2400 - 200 * i, "height": 2400 - 200 * i, "format": "avif", "quality": 70 + i}
    for i in range(3)
]


@pytest.fixture(scope="module")
async def lone(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[StackClient]:
    """One worker taking one job at a time, and a short visibility timeout, so a lost job reappears fast."""
    config = EmbeddedConfig(
        state_dir=tmp_path_factory.mktemp("lone"),
        workers=1,
        max_workers=1,
        api_port=0,
        spec=StackSpec(visibility_timeout=6),
        worker_env={"PIXFLEET_WORKER_CONCURRENCY": "1"},
    )
    async with EmbeddedStack(config) as stack, aiohttp.ClientSession() as http:
        yield StackClient(stack, http)


async def submit_slow(client: StackClient, seed: int = 3) -> str:
    form = aiohttp.FormData()
    form.add_field("operations", json.dumps(SLOW_OPERATIONS))
    form.add_field("file", images.photo_jpeg(2600, 2600, seed=seed), filename="big.jpg", content_type="image/jpeg")
    async with client.http.post(f"{client.api}/v1/images", data=form) as r:
        body = await r.json()
        assert r.status == 202, body
    return body["job_id"]


async def manifest(client: StackClient, job_id: str) -> dict:
    (found,) = await manifests(client, [job_id])
    return found


async def manifests(client: StackClient, job_ids: list[str]) -> list[dict]:
    """The jobs' manifests, read with one admin client."""
    async with client.admin("s3") as s3:

        async def one(job_id: str) -> dict:
            obj = await s3.get_object(Bucket=client.stack.aws.output_bucket, Key=f"results/{job_id}/manifest.json")
            return json.loads(await obj["Body"].read())

        return list(await asyncio.gather(*(one(j) for j in job_ids)))


async def wait_for(predicate, timeout: float = 60, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached after {timeout}s")
        await asyncio.sleep(0.2)


async def test_killed_worker_is_replaced_and_its_job_still_completes_once(lone: StackClient) -> None:
    stack = lone.stack
    (victim,) = await stack.tasks("worker")
    job_id = await submit_slow(lone)
    await lone.wait(job_id, until=("processing",))
    await stack.control.kill_task(victim["taskId"])  # SIGKILL: no drain, no goodbye

    async def replaced() -> list:
        running = await stack.tasks("worker")
        return [t for t in running if t["taskId"] != victim["taskId"] and t["healthStatus"] == "HEALTHY"]

    await wait_for(replaced, what="a replacement worker task")
    (stopped,) = [t for t in await stack.tasks("worker", status="STOPPED") if t["taskId"] == victim["taskId"]]
    assert stopped["exitCode"] == -signal.SIGKILL
    assert "Essential container in task exited" in stopped["stoppedReason"]

    job = await lone.wait(job_id, timeout=120)
    assert job["status"] == "succeeded", job
    keys = sorted(await lone.keys(stack.aws.output_bucket, f"results/{job_id}/"))
    assert keys == sorted([f"results/{job_id}/big{i}.avif" for i in range(3)] + [f"results/{job_id}/manifest.json"])
    # Redelivered after the visibility timeout. (The dead worker's pending long poll may
    # swallow one more delivery first, as with real SQS: hence >= 2.)
    assert (await manifest(lone, job_id))["attempt"] >= 2
    events = [e["message"] for e in await stack.control.events("worker", 100)]
    assert any(victim["taskId"][:8] in m and "stopped" in m for m in events)


async def test_scale_in_during_slow_jobs_drains_them_without_redelivery(lone: StackClient) -> None:
    stack = lone.stack
    await stack.control.set_scaling_limits("worker", minimum=2, maximum=2)
    await stack.wait_steady()
    jobs = [await submit_slow(lone, seed=s) for s in (11, 12)]
    for job_id in jobs:
        await lone.wait(job_id, until=("processing",))
    before = {t["taskId"] for t in await stack.tasks("worker")}
    await stack.control.set_scaling_limits("worker", minimum=1, maximum=1)  # both workers are busy

    async def drained() -> list:
        return [t for t in await stack.tasks("worker", status="STOPPED") if t["taskId"] in before]

    (stopped,) = await wait_for(drained, timeout=180, what="one drained worker")
    assert stopped["exitCode"] == 0  # it finished its job and exited cleanly on SIGTERM
    assert "Scaling activity" in stopped["stoppedReason"]
    for job_id in jobs:
        job = await lone.wait(job_id, timeout=120)
        assert job["status"] == "succeeded", job
        assert (await manifest(lone, job_id))["attempt"] == 1  # no redelivery, no loss
    assert len(await stack.tasks("worker")) == 1


async def test_restarted_orchestrator_adopts_its_tasks(lone: StackClient) -> None:
    stack = lone.stack
    await stack.wait_steady()
    before = sorted(t["taskId"] for t in await stack.tasks())
    stack.kill_orchestrator()  # a crash: tasks keep running
    await stack.runtime.wait(stack.orchestrator)
    await stack.start_orchestrator()
    await stack.wait_steady()
    after = sorted(t["taskId"] for t in await stack.tasks())
    assert after == before  # adopted: no duplicates, no orphans
    workers = [t for t in await stack.tasks("worker")]
    events = [e["message"] for e in await stack.control.events("worker", 100)]
    assert any(f"adopted {len(workers)} running task(s)" in m for m in events)
    # The adopted tasks still get their credentials from the new orchestrator.
    status, body = await lone.upload(images.photo_jpeg(400, 300), preset="thumbs")
    assert status == 202
    assert (await lone.wait(body["job_id"]))["status"] == "succeeded"
