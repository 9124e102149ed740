"""Worker behaviour end to end: image kinds, permanent failures, duplicates, the DLQ."""

from __future__ import annotations

import json
import time

import pytest

import images
from pipeline.manifest import upload_key
from pipeline.messages import JobMessage, new_job_id
from pipeline.transform.engine import transform
from pipeline.transform.presets import get_preset
from pipeline.transform.spec import Limits
from stack_fixtures import StackClient, queue_drained

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize(
    ("kind", "data", "w1600"),
    [
        ("EXIF orientation 6 (stored sideways)", images.photo_jpeg(1800, 1200, orientation=6), (1600, 1067)),
        ("CMYK JPEG", images.cmyk_jpeg(1000, 800), (1000, 800)),
        ("16-bit PNG", images.png16(900, 600, color=True), (900, 600)),
        ("PNG with alpha to JPEG", images.png_rgba(700, 500), (700, 500)),
        ("animated GIF (first frame)", images.animated_gif(640, 480, frames=4), (640, 480)),
    ],
)
async def test_image_kinds_through_the_pipeline(
    client: StackClient, kind: str, data: bytes, w1600: tuple[int, int]
) -> None:
    status, body = await client.upload(data, preset="web")
    assert status == 202, body
    job = await client.wait(body["job_id"])
    assert job["status"] == "succeeded", job
    largest = next(o for o in job["outputs"] if o["variant"] == "w1600")
    im = await client.fetch_image(largest["url"])
    assert im.format == "JPEG" and im.mode == "RGB"
    assert im.size == w1600


async def test_corrupt_image_fails_permanently_and_goes_to_the_dlq_at_once(client: StackClient) -> None:
    status, body = await client.upload(images.truncated_jpeg(), preset="web")
    assert status == 202, body  # the header is fine; the damage shows only when decoding
    job = await client.wait(body["job_id"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "corrupt_image"
    assert job["outputs"] == []
    dead = await _dlq_job(client, body["job_id"])
    assert dead["MessageAttributes"]["error_code"]["StringValue"] == "corrupt_image"
    manifest = await _manifest(client, body["job_id"])
    assert manifest["attempt"] == 1  # moved by the worker at once, not redriven after retries


async def _manifest(client: StackClient, job_id: str) -> dict:
    async with client.admin("s3") as s3:
        obj = await s3.get_object(Bucket=client.stack.aws.output_bucket, Key=f"results/{job_id}/manifest.json")
        return json.loads(await obj["Body"].read())


async def _dlq_job(client: StackClient, job_id: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    async with client.admin("sqs") as sqs:
        while time.monotonic() < deadline:
            got = await sqs.receive_message(
                QueueUrl=client.stack.aws.dlq_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
                VisibilityTimeout=0,
            )
            for m in got.get("Messages", []):
                if job_id in m["Body"]:
                    await sqs.delete_message(QueueUrl=client.stack.aws.dlq_url, ReceiptHandle=m["ReceiptHandle"])
                    return m
    raise AssertionError(f"no DLQ message for {job_id}")


async def test_a_message_that_is_not_a_job_goes_to_the_dlq(client: StackClient) -> None:
    marker = new_job_id()
    await client.send_raw({"hello": marker})
    dead = await _dlq_job(client, marker)
    assert dead["MessageAttributes"]["error_code"]["StringValue"] == "invalid_message"


async def test_s3_test_event_is_dropped_silently(client: StackClient) -> None:
    marker = new_job_id()
    await client.send_raw(
        {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": client.stack.aws.input_bucket, "RequestId": marker}
    )
    await queue_drained(client)
    async with client.admin("sqs") as sqs:
        got = await sqs.receive_message(QueueUrl=client.stack.aws.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    assert all(marker not in m["Body"] for m in got.get("Messages", []))


async def test_missing_source_object_fails_permanently(client: StackClient) -> None:
    job = JobMessage(job_id=new_job_id(), bucket=client.stack.aws.input_bucket, key=upload_key("f" * 32), preset="web")
    await client.send_raw(job.to_json())
    result = await client.wait(job.job_id)
    assert result["error"]["code"] == "source_missing"


async def test_duplicated_message_gives_the_same_single_set_of_outputs(client: StackClient) -> None:
    data = images.photo_jpeg(1200, 900, seed=7)
    job = JobMessage(
        job_id=new_job_id(), bucket=client.stack.aws.input_bucket, key=upload_key(new_job_id()), preset="web"
    )
    async with client.admin("s3") as s3:
        await s3.put_object(Bucket=job.bucket, Key=job.key, Body=data)
    # Two copies at once: both workers may render it concurrently; the result must be one set.
    await client.send_raw(job.to_json())
    await client.send_raw(job.to_json())
    result = await client.wait(job.job_id)
    assert result["status"] == "succeeded"
    await queue_drained(client)
    keys = sorted(await client.keys(client.stack.aws.output_bucket, f"results/{job.job_id}/"))
    expected = sorted(
        [f"results/{job.job_id}/{v}" for v in ("w1600.jpg", "w800.jpg", "w320.jpg", "w320-webp.webp", "manifest.json")]
    )
    assert keys == expected
    reference = {r.variant: r.data for r in transform(data, get_preset("web"), Limits()).renditions}
    for output in result["outputs"]:
        async with client.http.get(output["url"]) as r:
            assert await r.read() == reference[output["variant"]], f"{output['variant']} differs from a fresh render"


async def test_retryable_failures_are_retried_with_backoff_then_recorded(client: StackClient) -> None:
    # The worker role may not read this key (IAM enforced by moto): AccessDenied is treated as
    # transient, retried with backoff up to maxReceiveCount, then recorded as failed.
    job = JobMessage(
        job_id=new_job_id(), bucket=client.stack.aws.output_bucket, key="elsewhere/secret.jpg", preset="web"
    )
    await client.send_raw(job.to_json())
    result = await client.wait(job.job_id, timeout=90)
    assert result["status"] == "failed"
    assert result["error"]["code"] == "retries_exhausted"
    assert "AccessDenied" in result["error"]["message"]
    manifest = await _manifest(client, job.job_id)
    assert manifest["attempt"] == client.stack.config.spec.max_receive_count
    await _dlq_job(client, job.job_id)
