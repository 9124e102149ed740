"""Worker processes dying and draining: no job lost, exactly one set of outputs."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator

import aiohttp
import pytest

import images
from infra.stack import StackSpec
from services.orchestrator.embedded import EmbeddedConfig, EmbeddedStack
from stack_fixtures import StackClient

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Several large AVIF encodes: seconds of real CPU work, so a job is reliably caught mid-way.
SLOW_OPERATIONS = [
    {"name": f"big{i}", "width": 2400 - 200 * i, "height": 2400 - 200 * i, "format": "avif", "quality": 70 + i}
    for i in range(3)
]


@pytest.fixture(scope="module")
async def lone(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[StackClient]:
    """A stack with one worker and a short visibility timeout, so a lost worker's job reappears fast."""
    config = EmbeddedConfig(state_dir=tmp_path_factory.mktemp("lone"), workers=1, api_port=0, spec=StackSpec(visibility_timeout=6))
    async with EmbeddedStack(config) as stack, aiohttp.ClientSession() as http:
        yield StackClient(stack, http)


async def _submit_slow(client: StackClient) -> str:
    form = aiohttp.FormData()
    form.add_field("operations", json.dumps(SLOW_OPERATIONS))
    form.add_field("file", images.photo_jpeg(2600, 2600, seed=3), filename="big.jpg", content_type="image/jpeg")
    async with client.http.post(f"{client.api}/v1/images", data=form) as r:
        body = await r.json()
        assert r.status == 202, body
    return body["job_id"]


async def test_worker_killed_mid_job_the_job_still_completes_once(lone: StackClient) -> None:
    job_id = await _submit_slow(lone)
    first = await lone.wait(job_id, until=("processing",))
    assert first["status"] == "processing"
    victim = lone.stack.workers[0]
    lone.stack.runtime.kill(victim.task)  # SIGKILL: no drain, no goodbye
    assert await victim.task.process.wait() == -signal.SIGKILL
    lone.stack.workers.remove(victim)
    await lone.stack.start_worker()
    job = await lone.wait(job_id, timeout=120)
    assert job["status"] == "succeeded", job
    keys = sorted(await lone.keys(lone.stack.aws.output_bucket, f"results/{job_id}/"))
    assert keys == sorted([f"results/{job_id}/big{i}.avif" for i in range(3)] + [f"results/{job_id}/manifest.json"])
    async with lone.admin("s3") as s3:
        manifest = json.loads(await (await s3.get_object(Bucket=lone.stack.aws.output_bucket, Key=f"results/{job_id}/manifest.json"))["Body"].read())
    # Redelivered after the visibility timeout. (The dead worker's pending long poll may
    # swallow one more delivery first, as with real SQS: hence >= 2.)
    assert manifest["attempt"] >= 2
    assert manifest["worker_id"] != f"worker-{victim.task.task_id[:8]}"


async def test_sigterm_drains_the_running_job_and_exits_zero(lone: StackClient) -> None:
    job_id = await _submit_slow(lone)
    await lone.wait(job_id, until=("processing",))
    worker = lone.stack.workers[-1]
    code = await lone.stack.stop_task(worker, timeout=60)  # SIGTERM, SIGKILL only after 60 s
    assert code == 0
    lone.stack.workers.remove(worker)
    job = await lone.job(job_id)
    assert job["status"] == "succeeded", job  # finished before exit: nothing for anyone to redo
    assert "draining" in worker.task.log_path.read_text()
    await lone.stack.start_worker()


async def test_sigterm_on_an_idle_worker_exits_promptly(lone: StackClient) -> None:
    worker = lone.stack.workers[-1]
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await lone.stack.stop_task(worker, timeout=30) == 0
    lone.stack.workers.remove(worker)
    # The 20 s long poll is abandoned at once rather than waited out.
    assert loop.time() - started < 10
