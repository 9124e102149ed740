"""The orchestrator against the embedded emulator with the process runtime: scaling, credentials,
metadata, rollouts, batch tasks. Nothing of SQS, S3 or IAM is mocked."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import botocore.exceptions
import pytest
from aiobotocore.session import get_session

import images
from infra.stack import StackSpec
from pixfleet.stack import EmbeddedConfig, EmbeddedStack
from stack_fixtures import StackClient, queue_drained
from test_worker_lifecycle import manifests, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[StackClient]:
    """Workers autoscaled 1..4 at 10 messages per task, scaling in after 3 s of lower demand."""
    config = EmbeddedConfig(
        state_dir=tmp_path_factory.mktemp("fleet"),
        workers=1,
        max_workers=4,
        api_port=0,
        scaling={"ScaleInCooldown": 3, "TargetValue": 10},
        spec=StackSpec(visibility_timeout=10),  # a message swallowed by a killed worker's poll returns soon
    )
    async with EmbeddedStack(config) as stack, aiohttp.ClientSession() as http:
        yield StackClient(stack, http)


def task_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


async def test_a_burst_scales_out_to_max_drains_and_scales_back_in(fleet: StackClient) -> None:
    stack = fleet.stack
    small = images.photo_jpeg(320, 240)
    sem = asyncio.Semaphore(16)

    async def send(i: int) -> str:
        async with sem:
            status, body = await fleet.upload(small, preset="thumbs", filename=f"{i}.jpg")
            assert status == 202, body
            return body["job_id"]

    jobs = await asyncio.gather(*(send(i) for i in range(200)))

    async def at_max() -> bool:
        worker = (await stack.services())["worker"]
        return worker["desiredCount"] == 4 and worker["runningCount"] == 4

    await wait_for(at_max, timeout=30, what="4 running workers")
    for job_id in jobs:
        assert (await fleet.wait(job_id, timeout=180))["status"] == "succeeded"
    await queue_drained(fleet)

    async def at_min() -> bool:
        worker = (await stack.services())["worker"]
        return worker["desiredCount"] == 1 and worker["runningCount"] == 1 and worker["stoppingCount"] == 0

    await wait_for(at_min, timeout=180, what="scale in to 1 worker")
    # A message a draining worker handed back before starting it counts a delivery, not an attempt.
    # At-least-once under load: an attempt may be interrupted (its visibility ran out on a busy machine) and
    # redone, but none failed and each job ends with exactly one succeeded attempt.
    for manifest in await manifests(fleet, jobs):
        outcomes = [a["outcome"] for a in manifest["attempts"]]
        assert outcomes[-1:] == ["succeeded"] and set(outcomes[:-1]) <= {"interrupted"}, manifest
    messages = [e["message"] for e in await stack.control.events("worker", 100)]
    assert any("scaled out from 1 to 4" in m for m in messages) or any("to 4 tasks" in m for m in messages)
    assert any("scaled in" in m and "to 1 tasks" in m for m in messages)
    # Drained workers exited cleanly.
    stopped = [
        t for t in await stack.tasks("worker", status="STOPPED") if "Scaling activity" in (t["stoppedReason"] or "")
    ]
    assert stopped and all(t["exitCode"] == 0 for t in stopped)


async def test_credentials_endpoint_refuses_everyone_but_the_task_itself(fleet: StackClient) -> None:
    stack = fleet.stack
    api_task = (await stack.tasks("api"))[0]
    worker_task = (await stack.tasks("worker"))[0]
    api_env, worker_env = task_environ(api_task["pid"]), task_environ(worker_task["pid"])
    for env in (api_env, worker_env):
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & set(env)
        assert env["AWS_CONTAINER_CREDENTIALS_FULL_URI"].endswith(env["PIXFLEET_TASK_ID"])
    url = worker_env["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
    async with aiohttp.ClientSession() as http:

        async def fetch(uri: str, token: str | None) -> int:
            async with http.get(uri, headers={"Authorization": token} if token else {}) as r:
                return r.status

        assert await fetch(url, worker_env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]) == 200
        assert await fetch(url, None) == 401
        assert await fetch(url, "not-the-token") == 403
        assert await fetch(url, api_env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]) == 403  # another task's token
        async with http.get(url, headers={"Authorization": worker_env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]}) as r:
            creds = await r.json()
        assert set(creds) >= {"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}
        assert creds["RoleArn"].endswith("role/pixfleet-worker")

    # The worker's credentials work only within the worker role (moto enforces it).
    kwargs = {
        "region_name": stack.aws.region,
        "endpoint_url": stack.aws.endpoint_url,
        "aws_access_key_id": creds["AccessKeyId"],
        "aws_secret_access_key": creds["SecretAccessKey"],
        "aws_session_token": creds["Token"],
    }
    async with get_session().create_client("s3", **kwargs) as s3, get_session().create_client("sqs", **kwargs) as sqs:
        await sqs.get_queue_attributes(QueueUrl=stack.aws.queue_url, AttributeNames=["QueueArn"])
        with pytest.raises(botocore.exceptions.ClientError):
            await s3.put_object(Bucket=stack.aws.input_bucket, Key="uploads/x/original", Body=b"x")
        with pytest.raises(botocore.exceptions.ClientError):
            await sqs.send_message(QueueUrl=stack.aws.queue_url, MessageBody="{}")

    # A stopped task's token opens nothing any more.
    token = worker_env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    await stack.control.kill_task(worker_task["taskId"])

    async def gone() -> bool:
        return any(t["taskId"] == worker_task["taskId"] for t in await stack.tasks("worker", status="STOPPED"))

    await wait_for(gone, what="the killed task to be STOPPED")
    async with aiohttp.ClientSession() as http, http.get(url, headers={"Authorization": token}) as r:
        assert r.status == 403
    await stack.wait_steady()


async def test_kills_of_healthy_tasks_are_replaced_at_once_never_throttled(fleet: StackClient) -> None:
    """A healthy task killed (a drill, an OOM kill) is not a start failure: no launch throttle, ever."""
    stack = fleet.stack
    await stack.wait_steady()
    killed: list[str] = []

    async def healthy_worker() -> dict | None:
        service = (await stack.services())["worker"]
        tasks = [t for t in await stack.tasks("worker") if t["healthStatus"] == "HEALTHY" and t["taskId"] not in killed]
        return tasks[0] if tasks and service["healthyCount"] >= 1 else None

    for _ in range(8):
        victim = await wait_for(healthy_worker, timeout=60, what="a healthy worker")
        await stack.control.kill_task(victim["taskId"])
        killed.append(victim["taskId"])
    await wait_for(healthy_worker, timeout=60, what="a healthy worker after the kills")
    messages = [e["message"] for e in await stack.control.events("worker", 100)]
    assert not [m for m in messages if "launch throttle" in m or "backoff" in m]
    stopped = {t["taskId"]: t for t in await stack.tasks("worker", status="STOPPED")}
    assert all(stopped[t]["exitCode"] == -9 for t in killed), [stopped[t]["exitCode"] for t in killed]


async def test_task_metadata_endpoint(fleet: StackClient) -> None:
    task = (await fleet.stack.tasks("worker"))[0]
    uri = task_environ(task["pid"])["ECS_CONTAINER_METADATA_URI_V4"]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{uri}/task") as r:
            meta = await r.json()
        async with http.get(uri) as r:
            container = await r.json()
    assert meta["TaskARN"] == task["taskId"]
    assert (meta["Family"], meta["Revision"]) == ("pixfleet-worker", task["taskDefinition"].split(":")[1])
    assert meta["Limits"] == {"CPU": 1.0, "Memory": 1024}
    assert container["Limits"] == {"CPU": 1024, "Memory": 1024}
    assert container["Labels"]["com.amazonaws.ecs.task-definition-family"] == "pixfleet-worker"


def worker_revision(stack: EmbeddedStack, **env: str) -> dict:
    """The stack's worker task definition with some environment changed (a new revision's content)."""
    doc = json.loads((stack.state_dir / "config" / "taskdefs" / "worker.json").read_text())
    container = doc["containerDefinitions"][0]
    values = {e["name"]: e["value"] for e in container["environment"]} | env
    container["environment"] = [{"name": k, "value": v} for k, v in values.items()]
    return doc


async def test_a_bad_rollout_rolls_back_automatically(fleet: StackClient) -> None:
    """Independent of what earlier tests did to the service: the launch throttle is per revision."""
    stack = fleet.stack
    await stack.wait_steady()
    # A revision whose tasks cannot start: the worker refuses an invalid setting and exits 2.
    doc = worker_revision(stack, PIXFLEET_WORKER_CONCURRENCY="0")
    registered = await stack.control.register_task_definition(doc)
    before = (await stack.services())["worker"]["taskDefinition"]
    assert registered != before
    await stack.control.update_service("worker", task_definition=registered)

    async def rolled_back() -> bool:
        worker = (await stack.services())["worker"]
        return worker["taskDefinition"] == before and worker["steady"]

    await wait_for(rolled_back, timeout=240, what="rollback")  # generous: a loaded machine starts tasks slowly
    messages = [e["message"] for e in await stack.control.events("worker", 100)]
    assert any(f"({registered}) failed" in m and f"Rolling back to {before}" in m for m in messages)
    failed = [t for t in await stack.tasks("worker", status="STOPPED") if t["taskDefinition"] == registered]
    assert len(failed) >= 3 and all(t["exitCode"] == 2 for t in failed)
    # The service kept serving on the old revision throughout.
    _, body = await fleet.upload(images.photo_jpeg(300, 200), preset="thumbs")
    assert (await fleet.wait(body["job_id"]))["status"] == "succeeded"


async def test_a_good_rollout_replaces_every_task(fleet: StackClient) -> None:
    stack = fleet.stack
    doc = worker_revision(stack, PIXFLEET_WORKER_BATCH_SIZE="5")
    registered = await stack.control.register_task_definition(doc)
    await stack.control.update_service("worker", task_definition=registered)

    async def deployed() -> bool:
        worker = (await stack.services())["worker"]
        tasks = await stack.tasks("worker")
        return (
            worker["steady"]
            and worker["taskDefinition"] == registered
            and all(t["taskDefinition"] == registered for t in tasks)
        )

    await wait_for(deployed, timeout=240, what="the new revision everywhere")
    messages = [e["message"] for e in await stack.control.events("worker", 100)]
    assert any(f"({registered}) completed" in m for m in messages)


async def test_run_task_drains_the_queue_and_exits(fleet: StackClient) -> None:
    stack = fleet.stack
    (task,) = await stack.control.run_task("pixfleet-worker", 1, {"PIXFLEET_WORKER_IDLE_EXIT_AFTER": "2"})
    assert task["group"] == "family:pixfleet-worker" and task["service"] is None

    async def exited() -> list:
        return [t for t in await stack.tasks(status="STOPPED") if t["taskId"] == task["taskId"]]

    (done,) = await wait_for(exited, timeout=60, what="the batch task to exit")
    assert done["exitCode"] == 0
    assert not [t for t in await stack.tasks() if t["group"].startswith("family:")]  # not replaced


async def test_status_and_events_from_the_command_line(fleet: StackClient) -> None:
    env = {**os.environ, "PIXFLEET_STATE_DIR": str(fleet.stack.state_dir)}
    cli = [sys.executable, "-m", "pixfleet"]
    out = subprocess.run([*cli, "status", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert {s["serviceName"] for s in status["services"]} == {"api", "worker", "deadletter"}
    assert set(status["queue"]) >= {"visible", "in_flight", "delayed", "dead_letters"}
    table = subprocess.run([*cli, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert "services" in table.stdout and "worker" in table.stdout
    events = subprocess.run([*cli, "events", "--limit", "5"], env=env, capture_output=True, text=True, timeout=60)
    assert events.returncode == 0 and "(service" in events.stdout
    scaled = subprocess.run(
        [*cli, "service", "scale", "worker", "--min", "1", "--max", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert scaled.returncode == 0, scaled.stderr
    assert (await fleet.stack.services())["worker"]["autoScaling"]["max"] == 3
    bad = subprocess.run(
        [*cli, "service", "scale", "worker", "--min", "5", "--max", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--min 5 is above --max 2" in bad.stderr


async def test_orchestrator_metrics(fleet: StackClient) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{fleet.stack.orchestrator_url}/metrics") as r:
        text = await r.text()
    for name in (
        'pixfleet_queue_messages{kind="visible"}',
        'pixfleet_queue_messages{kind="dlq"}',
        'pixfleet_service_desired_tasks{service="worker"}',
        'pixfleet_service_running_tasks{service="api"}',
        'pixfleet_scaling_decisions_total{action="scale_out",service="worker"}',
        "pixfleet_credential_refreshes_total",
    ):
        assert name in text, name
