"""The job queue's own settings reach the services from the queue, not from copies.

The worker's visibility timeout and delivery bound, and the dead-letter recorder's
delivery count, are read with ``GetQueueAttributes`` (``VisibilityTimeout``, the
``RedrivePolicy``'s ``maxReceiveCount``) when they start, unless the environment
overrides them; the queue depth helper is the one the API, the scaler and the
recorder share. All against the session's IAM-enforcing moto server, with each
service's own role where the service reads the stack's queues.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from pipeline.aws import NO_REDRIVE_RECEIVE_COUNT, QueueConfig, QueueDepth, queue_config, queue_depth
from pipeline.settings import AwsSettings
from services.deadletter.recorder import DeadLetterRecorder
from services.deadletter.settings import DeadLetterSettings
from services.worker.settings import WorkerSettings
from services.worker.worker import Worker

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _aws(emulator: Any, **queues: str) -> AwsSettings:
    o = emulator.outputs
    return AwsSettings(
        endpoint_url=emulator.url,
        region=emulator.region,
        input_bucket=o.input_bucket,
        output_bucket=o.output_bucket,
        queue_url=queues.get("queue_url", o.queue_url),
        dlq_url=queues.get("dlq_url", o.dlq_url),
    )


@pytest.fixture
async def queue(emulator: Any, aws_client: Callable[..., Any]) -> AsyncIterator[Callable[..., Any]]:
    """``await queue(**attributes)`` → the URL of a new queue (deleted afterwards), created with the admin keys."""
    made: list[str] = []
    async with aws_client("sqs", emulator.bootstrap) as sqs:

        async def make(**attributes: Any) -> str:
            name = f"qs-{uuid.uuid4().hex[:12]}"
            attrs = {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in attributes.items()}
            made.append((await sqs.create_queue(QueueName=name, Attributes=attrs))["QueueUrl"])
            return made[-1]

        yield make
        for url in made:
            await sqs.delete_queue(QueueUrl=url)


async def _redrive(emulator: Any, aws_client: Callable[..., Any], count: int) -> dict[str, Any]:
    async with aws_client("sqs", emulator.bootstrap) as sqs:
        dlq = (await sqs.get_queue_attributes(QueueUrl=emulator.outputs.dlq_url, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
    return {"deadLetterTargetArn": dlq, "maxReceiveCount": count}


async def test_queue_config_reads_the_visibility_timeout_and_the_redrive_policy(
    emulator: Any, aws_client: Callable[..., Any], queue: Callable[..., Any]
) -> None:
    redriven = await queue(VisibilityTimeout=17, RedrivePolicy=await _redrive(emulator, aws_client, 5))
    plain = await queue(VisibilityTimeout=9)
    async with aws_client("sqs", emulator.bootstrap) as sqs:
        assert await queue_config(sqs, redriven) == QueueConfig(visibility_timeout=17, max_receive_count=5)
        assert await queue_config(sqs, plain) == QueueConfig(9, NO_REDRIVE_RECEIVE_COUNT)


async def test_queue_depth_counts_waiting_in_flight_and_delayed_messages(
    emulator: Any, aws_client: Callable[..., Any], queue: Callable[..., Any]
) -> None:
    url = await queue()
    async with aws_client("sqs", emulator.bootstrap) as sqs:
        assert await queue_depth(sqs, url) == QueueDepth(0, 0, 0)
        for body in ("a", "b"):
            await sqs.send_message(QueueUrl=url, MessageBody=body)
        await sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=900)
        got = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=600)
        assert len(got["Messages"]) == 1
        depth = await queue_depth(sqs, url)
    assert depth == QueueDepth(visible=1, in_flight=1, delayed=1) and depth.total == 3


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (17, 5)),  # both from the queue
        ({"PIXFLEET_VISIBILITY_TIMEOUT": "30"}, (30, 5)),
        ({"PIXFLEET_MAX_RECEIVE_COUNT": "2"}, (17, 2)),
        ({"PIXFLEET_VISIBILITY_TIMEOUT": "30", "PIXFLEET_MAX_RECEIVE_COUNT": "2"}, (30, 2)),  # no read needed
    ],
)
async def test_a_worker_takes_what_the_environment_leaves_open_from_its_queue(
    emulator: Any, aws_client: Callable[..., Any], queue: Callable[..., Any], env: dict[str, str], expected: tuple
) -> None:
    url = await queue(VisibilityTimeout=17, RedrivePolicy=await _redrive(emulator, aws_client, 5))
    settings = WorkerSettings.from_env({**_aws(emulator, queue_url=url).env(), "PIXFLEET_WORKER_PROCESSES": "1", **env})
    worker = Worker(settings, credentials=emulator.bootstrap)
    worker.stop()  # start (open clients, read the queue), receive nothing, drain, return
    assert await worker.main() == 0
    assert (worker.visibility_timeout, worker.max_receive_count) == expected
    assert worker.heartbeat_interval == max(1.0, expected[0] / 3)


@pytest.mark.parametrize("service", ["worker", "deadletter"])
async def test_each_service_role_may_read_the_job_queues_settings(
    emulator: Any, aws_client: Callable[..., Any], role_session: Callable[..., Any], service: str
) -> None:
    async with aws_client("sqs", emulator.bootstrap) as sqs:
        stack = await queue_config(sqs, emulator.outputs.queue_url)  # what provisioning set
    creds = (await role_session(service)).as_dict()
    env = {**_aws(emulator).env(), "PIXFLEET_WORKER_PROCESSES": "1"}
    runner: Worker | DeadLetterRecorder
    if service == "worker":
        runner = Worker(WorkerSettings.from_env(env), credentials=creds)
    else:
        runner = DeadLetterRecorder(DeadLetterSettings.from_env(env), credentials=creds)
    runner.stop()
    assert await runner.main() == 0
    assert runner.max_receive_count == stack.max_receive_count
    if isinstance(runner, Worker):
        assert runner.visibility_timeout == stack.visibility_timeout
