"""Who may do what, checked by moto over HTTP with IAM enforced and real role sessions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, UTC
from typing import Any
from urllib.parse import unquote_plus

import aiohttp
import pytest
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError

from infra.credentials import TemporaryCredentials
from infra.provision import StackOutputs

MARK = "pixfleet-test-iam-matrix"
SEED = "iam-seed.png"

Operation = Callable[[Any, Any, Any, StackOutputs], Awaitable[Any]]  # (s3, sqs, sts, outputs)


def put(bucket: str, key: str) -> Operation:
    return lambda s3, sqs, sts, o: s3.put_object(Bucket=getattr(o, bucket), Key=key, Body=b"img")


def get(bucket: str, key: str) -> Operation:
    async def read(s3: Any, sqs: Any, sts: Any, o: StackOutputs) -> bytes:
        answer = await s3.get_object(Bucket=getattr(o, bucket), Key=key)
        async with answer["Body"] as body:
            return await body.read()

    return read


def delete(bucket: str, key: str) -> Operation:
    return lambda s3, sqs, sts, o: s3.delete_object(Bucket=getattr(o, bucket), Key=key)


def multipart(bucket: str, key: str) -> Operation:
    """A streamed upload: create, one part, complete (all authorized as s3:PutObject on the key)."""

    async def upload(s3: Any, sqs: Any, sts: Any, o: StackOutputs) -> None:
        started = await s3.create_multipart_upload(Bucket=getattr(o, bucket), Key=key)
        part = await s3.upload_part(
            Bucket=getattr(o, bucket), Key=key, UploadId=started["UploadId"], PartNumber=1, Body=b"img"
        )
        await s3.complete_multipart_upload(
            Bucket=getattr(o, bucket),
            Key=key,
            UploadId=started["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
        )

    return upload


def list_objects(bucket: str) -> Operation:
    return lambda s3, sqs, sts, o: s3.list_objects_v2(Bucket=getattr(o, bucket))


def send(queue: str) -> Operation:
    return lambda s3, sqs, sts, o: sqs.send_message(QueueUrl=getattr(o, queue), MessageBody=MARK)


def receive(queue: str) -> Operation:
    # VisibilityTimeout=0 leaves whatever it sees visible for everyone else.
    return lambda s3, sqs, sts, o: sqs.receive_message(
        QueueUrl=getattr(o, queue), MaxNumberOfMessages=1, WaitTimeSeconds=0, VisibilityTimeout=0
    )


def queue_attributes(queue: str) -> Operation:
    return lambda s3, sqs, sts, o: sqs.get_queue_attributes(
        QueueUrl=getattr(o, queue), AttributeNames=["ApproximateNumberOfMessages"]
    )


def assume(role: str) -> Operation:
    return lambda s3, sqs, sts, o: sts.assume_role(RoleArn=o.role_arns[role], RoleSessionName=f"pytest-{role}")


@dataclass(frozen=True)
class Case:
    role: str
    what: str
    operation: Operation
    allowed: bool


CASES = [
    Case("api", "put input uploads/", put("input_bucket", "uploads/iam/api.png"), True),
    Case("api", "put input elsewhere", put("input_bucket", "elsewhere/api.png"), False),
    Case("api", "multipart upload to uploads/", multipart("input_bucket", "uploads/iam/streamed.png"), True),
    Case("api", "multipart upload elsewhere", multipart("input_bucket", "elsewhere/streamed.png"), False),
    Case("api", "put output results/", put("output_bucket", "results/api.png"), False),
    Case("api", "get input uploads/", get("input_bucket", f"uploads/{SEED}"), True),
    Case("api", "get input incoming/", get("input_bucket", f"incoming/{SEED}"), True),
    Case("api", "get output results/", get("output_bucket", f"results/{SEED}"), True),
    Case("api", "delete input uploads/", delete("input_bucket", "uploads/iam/rejected.png"), True),
    Case("api", "delete input incoming/", delete("input_bucket", "incoming/iam/rejected.png"), False),
    Case("api", "list input bucket", list_objects("input_bucket"), False),
    Case("api", "send to job queue", send("queue_url"), True),
    Case("api", "job queue attributes", queue_attributes("queue_url"), True),
    Case("api", "receive from job queue", receive("queue_url"), False),
    Case("api", "send to DLQ", send("dlq_url"), False),
    Case("api", "assume worker role", assume("worker"), False),
    Case("worker", "get input uploads/", get("input_bucket", f"uploads/{SEED}"), True),
    Case("worker", "get input incoming/", get("input_bucket", f"incoming/{SEED}"), True),
    Case("worker", "put input uploads/", put("input_bucket", "uploads/iam/worker.png"), False),
    Case("worker", "put input incoming/", put("input_bucket", "incoming/iam/worker.png"), False),
    Case("worker", "delete input uploads/", delete("input_bucket", f"uploads/{SEED}"), False),
    Case("worker", "put output results/", put("output_bucket", "results/iam/worker.png"), True),
    Case("worker", "get output results/", get("output_bucket", f"results/{SEED}"), True),
    Case("worker", "put output elsewhere", put("output_bucket", "elsewhere/worker.png"), False),
    Case("worker", "delete output results/", delete("output_bucket", "results/iam/partial.png"), True),
    Case("api", "delete output results/", delete("output_bucket", "results/iam/partial.png"), False),
    Case("worker", "receive from job queue", receive("queue_url"), True),
    Case("worker", "job queue attributes", queue_attributes("queue_url"), True),
    Case("worker", "send to job queue", send("queue_url"), False),
    Case("worker", "send to DLQ", send("dlq_url"), True),
    Case("worker", "receive from DLQ", receive("dlq_url"), False),
    Case("worker", "assume api role", assume("api"), False),
    Case("deadletter", "receive from DLQ", receive("dlq_url"), True),
    Case("deadletter", "DLQ attributes", queue_attributes("dlq_url"), True),
    Case("deadletter", "get output results/", get("output_bucket", f"results/{SEED}"), True),
    Case("deadletter", "put output results/", put("output_bucket", "results/iam/deadletter.json"), True),
    Case("deadletter", "delete output results/", delete("output_bucket", "results/iam/partial.png"), True),
    Case("deadletter", "receive from job queue", receive("queue_url"), False),
    Case("deadletter", "job queue attributes", queue_attributes("queue_url"), True),  # its maxReceiveCount
    Case("deadletter", "send to job queue", send("queue_url"), False),
    Case("deadletter", "send to DLQ", send("dlq_url"), False),
    Case("deadletter", "get input uploads/", get("input_bucket", f"uploads/{SEED}"), False),
    Case("deadletter", "put input incoming/", put("input_bucket", "incoming/iam/deadletter.png"), False),
    Case("deadletter", "assume worker role", assume("worker"), False),
    Case("orchestrator", "job queue attributes", queue_attributes("queue_url"), True),
    Case("orchestrator", "DLQ attributes", queue_attributes("dlq_url"), True),
    Case("orchestrator", "get input uploads/", get("input_bucket", f"uploads/{SEED}"), False),
    Case("orchestrator", "get output results/", get("output_bucket", f"results/{SEED}"), False),
    Case("orchestrator", "put input uploads/", put("input_bucket", "uploads/iam/orchestrator.png"), False),
    Case("orchestrator", "put output results/", put("output_bucket", "results/iam/orchestrator.png"), False),
    Case("orchestrator", "send to job queue", send("queue_url"), False),
    Case("orchestrator", "receive from job queue", receive("queue_url"), False),
    Case("orchestrator", "assume api role", assume("api"), True),
    Case("orchestrator", "assume worker role", assume("worker"), True),
    Case("orchestrator", "assume deadletter role", assume("deadletter"), True),
    Case("orchestrator", "assume its own role", assume("orchestrator"), False),
]


@pytest.fixture(scope="module")
async def seeded(emulator, aws_client, take_messages) -> AsyncIterator[StackOutputs]:
    """Seed objects to read; afterwards remove the messages this module sent."""
    o = emulator.outputs
    async with aws_client("s3", emulator.bootstrap) as s3:
        for bucket, key in [
            (o.input_bucket, f"uploads/{SEED}"),
            (o.input_bucket, f"incoming/{SEED}"),
            (o.output_bucket, f"results/{SEED}"),
        ]:
            await s3.put_object(Bucket=bucket, Key=key, Body=b"seed")
    await take_messages(o.queue_url, emulator.bootstrap, lambda body: _event_for(body, f"incoming/{SEED}"))
    yield o
    for queue in (o.queue_url, o.dlq_url):
        await take_messages(queue, emulator.bootstrap, lambda body: body == MARK)


def _event_for(body: Any, key: str) -> bool:
    records = body.get("Records", []) if isinstance(body, dict) else []
    return any(unquote_plus(record["s3"]["object"]["key"]) == key for record in records)


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{c.role}: {c.what} -> {'allowed' if c.allowed else 'denied'}" for c in CASES]
)
async def test_permission_matrix(case: Case, seeded: StackOutputs, role_session, aws_client) -> None:
    creds = await role_session(case.role)
    async with aws_client("s3", creds) as s3, aws_client("sqs", creds) as sqs, aws_client("sts", creds) as sts:
        if case.allowed:
            await case.operation(s3, sqs, sts, seeded)
        else:
            with pytest.raises(ClientError) as denied:
                await case.operation(s3, sqs, sts, seeded)
            assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403, denied.value.response


@pytest.mark.parametrize("role", ["api", "worker", "deadletter", "orchestrator"])
async def test_roles_use_their_own_temporary_credentials(role: str, emulator, role_session, aws_client) -> None:
    creds: TemporaryCredentials = await role_session(role)
    assert creds.access_key_id != emulator.bootstrap["access_key_id"]
    assert creds.session_token and creds.expiration > datetime.now(UTC)
    assert creds.to_container_json()["RoleArn"] == emulator.outputs.role_arns[role]
    async with aws_client("sts", creds) as sts:
        identity = await sts.get_caller_identity()
    assert identity["Arn"].startswith(f"arn:aws:sts::{emulator.outputs.account_id}:assumed-role/pixfleet-{role}/")


@pytest.mark.parametrize(
    "who",
    ["made-up keys", "forged session token", "role keys without their token"],
)
async def test_unknown_credentials_are_refused(who: str, emulator, role_session, aws_client) -> None:
    api = (await role_session("api")).as_dict()
    creds = {
        "made-up keys": {"access_key_id": "AKIAFAKEFAKEFAKEFAKE", "secret_access_key": "nope"},
        "forged session token": {**api, "session_token": "forged"},
        "role keys without their token": {**api, "session_token": ""},
    }[who]
    for service, call in [
        ("s3", lambda c: c.head_object(Bucket=emulator.outputs.input_bucket, Key=f"uploads/{SEED}")),
        ("sqs", lambda c: c.get_queue_attributes(QueueUrl=emulator.outputs.queue_url)),
    ]:
        async with aws_client(service, creds) as client:
            with pytest.raises(ClientError) as refused:
                await call(client)
        # 403 (InvalidAccessKeyId, InvalidClientTokenId) or, for S3's InvalidToken, 400 — as on AWS.
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] in {400, 403}


async def test_orchestrator_hands_out_task_credentials(emulator, role_session) -> None:
    """The orchestrator's session may assume a task role, and the result works (ECS agent's job)."""
    from infra.credentials import assume_role

    orchestrator = await role_session("orchestrator")
    worker = await assume_role(
        emulator.url, emulator.region, orchestrator, emulator.outputs.role_arns["worker"], "task-1"
    )
    assert worker.to_container_json()["Token"] == worker.session_token
    assert worker.access_key_id not in {orchestrator.access_key_id, emulator.bootstrap["access_key_id"]}


# --- presigned requests (browser uploads, result links) ------------------------------------


@pytest.mark.parametrize("signature", ["s3v4", "s3"])
@pytest.mark.parametrize(
    "role, prefix, status",
    [
        ("api", "incoming/", 204),
        ("api", "uploads/", 204),
        ("api", "elsewhere/", 403),
        ("worker", "incoming/", 403),
        ("orchestrator", "incoming/", 403),
    ],
)
async def test_presigned_post(
    role: str, prefix: str, status: int, signature: str, seeded, role_session, aws_client, take_messages, emulator
) -> None:
    key = f"{prefix}post-{uuid.uuid4().hex}.png"
    async with aws_client("s3", await role_session(role), AioConfig(signature_version=signature)) as s3:
        post = await s3.generate_presigned_post(
            seeded.input_bucket, key, Conditions=[["content-length-range", 1, 1024]], ExpiresIn=300
        )
    assert "x-amz-security-token" in post["fields"]
    assert await _post(post, b"img") == status
    events = await take_messages(seeded.queue_url, emulator.bootstrap, lambda body: _event_for(body, key))
    assert len(events) == (1 if status == 204 and prefix == "incoming/" else 0)


@pytest.mark.parametrize(
    "tamper, status, says",
    [
        ("too large", 400, "<Code>EntityTooLarge</Code>"),
        ("different key", 403, 'Policy Condition failed: {"key": "incoming/held.png"}'),
        ("extra field", 403, "Invalid according to Policy: Extra input fields: content-type"),
        ("wrong content type", 403, 'Policy Condition failed: ["starts-with", "$Content-Type", "image/"]'),
        ("bad signature", 403, "<Code>SignatureDoesNotMatch</Code>"),
    ],
)
async def test_presigned_post_is_held_to_its_policy(
    tamper: str, status: int, says: str, seeded, role_session, aws_client
) -> None:
    """Each refusal says which condition failed, in S3's words."""
    conditions: list = [["content-length-range", 1, 8]]
    if tamper == "wrong content type":
        conditions.append(["starts-with", "$Content-Type", "image/"])
    async with aws_client("s3", await role_session("api"), AioConfig(signature_version="s3v4")) as s3:
        post = await s3.generate_presigned_post(
            seeded.input_bucket, "incoming/held.png", Conditions=conditions, ExpiresIn=300
        )
    fields, body = dict(post["fields"]), b"img"
    if tamper == "too large":
        body = b"x" * 9
    elif tamper == "different key":
        fields["key"] = "incoming/other.png"
    elif tamper == "extra field" or tamper == "wrong content type":
        fields["Content-Type"] = "text/html"
    else:
        fields["x-amz-signature"] = "0" * 64
    got, text = await _post_text({"url": post["url"], "fields": fields}, body)
    assert got == status, text
    assert says in text, text


async def _post(post: dict[str, Any], body: bytes) -> int:
    return (await _post_text(post, body))[0]


async def _post_text(post: dict[str, Any], body: bytes) -> tuple[int, str]:
    form = aiohttp.FormData()
    for name, value in post["fields"].items():
        form.add_field(name, value)
    form.add_field("file", body, filename="upload.png", content_type="image/png")  # must come last
    async with aiohttp.ClientSession() as http, http.post(post["url"], data=form) as answer:
        return answer.status, await answer.text()


@pytest.mark.parametrize("signature", ["s3v4", "s3"])
@pytest.mark.parametrize(
    "role, bucket, key, status",
    [
        ("api", "output_bucket", f"results/{SEED}", 200),
        ("api", "input_bucket", f"uploads/{SEED}", 200),
        ("worker", "output_bucket", f"results/{SEED}", 200),
        ("api", "output_bucket", "results/missing.png", 404),
        ("orchestrator", "output_bucket", f"results/{SEED}", 403),
        ("worker", "input_bucket", "elsewhere/x.png", 403),
    ],
)
async def test_presigned_get(
    role: str, bucket: str, key: str, status: int, signature: str, seeded, role_session, aws_client
) -> None:
    async with aws_client("s3", await role_session(role), AioConfig(signature_version=signature)) as s3:
        url = await s3.generate_presigned_url(
            "get_object", Params={"Bucket": getattr(seeded, bucket), "Key": key}, ExpiresIn=300
        )
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        assert answer.status == status
        if status == 200:
            assert await answer.read() == b"seed"


@pytest.mark.parametrize("request_kind", ["unsigned", "tampered signature", "other key"])
async def test_presigned_get_refuses_forgeries(request_kind: str, seeded, role_session, aws_client) -> None:
    async with aws_client("s3", await role_session("api"), AioConfig(signature_version="s3v4")) as s3:
        url = await s3.generate_presigned_url(
            "get_object", Params={"Bucket": seeded.output_bucket, "Key": f"results/{SEED}"}, ExpiresIn=300
        )
    url = {
        "unsigned": url.split("?")[0],
        "tampered signature": url[:-4] + "0000",
        "other key": url.replace(f"results/{SEED}", "results/other.png"),
    }[request_kind]
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        assert answer.status == 403


async def test_cors_preflight_for_browser_uploads(seeded, emulator) -> None:
    headers = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    preflight = f"{emulator.url}/{seeded.input_bucket}"
    async with aiohttp.ClientSession() as http, http.options(preflight, headers=headers) as answer:
        assert answer.status == 200
        assert answer.headers["Access-Control-Allow-Methods"] == "POST"
        assert answer.headers["Access-Control-Allow-Origin"] in {"*", "https://app.example"}
