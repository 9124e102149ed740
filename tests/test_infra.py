"""The stack declaration (pure, table-driven) and its provisioning against real moto over HTTP."""

from __future__ import annotations

import json
import re
import socket
import uuid
from datetime import datetime, timedelta, UTC
from typing import Any
from urllib.parse import unquote_plus

import pytest
from aiobotocore.session import get_session

from infra.credentials import TemporaryCredentials, client_kwargs
from infra.emulator import EmulatorUnavailable, MotoServer, emulator_spec
from infra.moto_server.presigned import post_policy_problem
from infra.provision import StackOutputs, provision
from infra.stack import StackSpec, render, sqs_attributes

ACCOUNT = "123456789012"
REGION = "us-east-1"
SPEC = StackSpec()
STATE = render(SPEC, ACCOUNT, REGION)
ROLES = STATE["roles"]


# --- a tiny IAM evaluator, enough for Allow-only identity policies --------------------------


def _matches(pattern: str, value: str) -> bool:
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), value) is not None


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def allows(policy: dict[str, Any], action: str, resource: str) -> bool:
    return any(
        statement["Effect"] == "Allow"
        and any(_matches(a, action) for a in _as_list(statement["Action"]))
        and any(_matches(r, resource) for r in _as_list(statement["Resource"]))
        for statement in policy["Statement"]
    )


def policy_of(role: str) -> dict[str, Any]:
    (document,) = ROLES[role]["policies"].values()
    return document


IN, OUT = "arn:aws:s3:::pixfleet-input", "arn:aws:s3:::pixfleet-output"
JOBS = f"arn:aws:sqs:{REGION}:{ACCOUNT}:pixfleet-jobs"
DLQ = f"arn:aws:sqs:{REGION}:{ACCOUNT}:pixfleet-jobs-dlq"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/pixfleet-"


# --- render(): who may do what ---------------------------------------------------------------


@pytest.mark.parametrize(
    "role, action, resource, allowed",
    [
        ("api", "s3:PutObject", f"{IN}/uploads/a.png", True),
        ("api", "s3:PutObject", f"{IN}/incoming/a.png", True),
        ("api", "s3:PutObject", f"{IN}/elsewhere/a.png", False),
        ("api", "s3:PutObject", f"{OUT}/results/a.png", False),
        ("api", "s3:AbortMultipartUpload", f"{IN}/uploads/a.png", True),
        ("api", "s3:ListMultipartUploadParts", f"{IN}/uploads/a.png", True),
        ("api", "s3:GetObject", f"{IN}/incoming/a.png", True),
        ("api", "s3:GetObject", f"{OUT}/results/a.png", True),
        ("api", "s3:DeleteObject", f"{IN}/uploads/a.png", True),
        ("api", "s3:DeleteObject", f"{IN}/incoming/a.png", False),
        ("api", "s3:ListBucket", IN, False),
        ("api", "sqs:SendMessage", JOBS, True),
        ("api", "sqs:GetQueueAttributes", JOBS, True),
        ("api", "sqs:SendMessage", DLQ, False),
        ("api", "sqs:ReceiveMessage", JOBS, False),
        ("api", "sts:AssumeRole", f"{ROLE}worker", False),
        ("worker", "s3:GetObject", f"{IN}/uploads/a.png", True),
        ("worker", "s3:GetObject", f"{IN}/incoming/a.png", True),
        ("worker", "s3:GetObject", f"{IN}/elsewhere/a.png", False),
        ("worker", "s3:PutObject", f"{IN}/uploads/a.png", False),
        ("worker", "s3:PutObject", f"{OUT}/results/a.png", True),
        ("worker", "s3:PutObject", f"{OUT}/elsewhere/a.png", False),
        ("worker", "s3:GetObject", f"{OUT}/results/a.png", True),
        ("worker", "s3:DeleteObject", f"{IN}/uploads/a.png", False),
        ("worker", "s3:DeleteObject", f"{OUT}/results/a.png", True),  # a failed job's partial outputs
        ("deadletter", "s3:DeleteObject", f"{OUT}/results/a.png", True),
        ("worker", "sqs:ReceiveMessage", JOBS, True),
        ("worker", "sqs:DeleteMessage", JOBS, True),
        ("worker", "sqs:ChangeMessageVisibility", JOBS, True),
        ("worker", "sqs:GetQueueAttributes", JOBS, True),
        ("worker", "sqs:SendMessage", JOBS, False),
        ("worker", "sqs:SendMessage", DLQ, True),
        ("worker", "sqs:ReceiveMessage", DLQ, False),
        ("deadletter", "sqs:ReceiveMessage", DLQ, True),
        ("deadletter", "sqs:ChangeMessageVisibility", DLQ, True),
        ("deadletter", "sqs:DeleteMessage", DLQ, False),
        ("deadletter", "sqs:ReceiveMessage", JOBS, False),
        ("deadletter", "sqs:GetQueueAttributes", JOBS, True),  # the redrive policy's maxReceiveCount
        ("deadletter", "sqs:ChangeMessageVisibility", JOBS, False),
        ("deadletter", "sqs:SendMessage", JOBS, False),
        ("deadletter", "s3:GetObject", f"{OUT}/results/a/manifest.json", True),
        ("deadletter", "s3:PutObject", f"{OUT}/results/a/manifest.json", True),
        ("deadletter", "s3:GetObject", f"{IN}/uploads/a.png", False),
        ("orchestrator", "sqs:GetQueueAttributes", JOBS, True),
        ("orchestrator", "sqs:GetQueueAttributes", DLQ, True),
        ("orchestrator", "sqs:SendMessage", JOBS, False),
        ("orchestrator", "sqs:ReceiveMessage", JOBS, False),
        ("orchestrator", "sts:AssumeRole", f"{ROLE}api", True),
        ("orchestrator", "sts:AssumeRole", f"{ROLE}worker", True),
        ("orchestrator", "sts:AssumeRole", f"{ROLE}deadletter", True),
        ("orchestrator", "sts:AssumeRole", f"{ROLE}orchestrator", False),
        ("orchestrator", "s3:GetObject", f"{IN}/uploads/a.png", False),
        ("orchestrator", "s3:PutObject", f"{OUT}/results/a.png", False),
    ],
)
def test_role_permissions(role: str, action: str, resource: str, allowed: bool) -> None:
    assert allows(policy_of(role), action, resource) is allowed


@pytest.mark.parametrize("role", ["api", "worker", "deadletter", "orchestrator"])
def test_every_statement_names_its_resources(role: str) -> None:
    for statement in policy_of(role)["Statement"]:
        actions = _as_list(statement["Action"])
        assert all("*" not in action for action in actions), statement
        for resource in _as_list(statement["Resource"]):
            assert resource != "*" and not resource.endswith(":*"), statement
            service = actions[0].split(":")[0]
            prefix = {"s3": "arn:aws:s3:::pixfleet-", "sqs": "arn:aws:sqs:", "sts": "arn:aws:iam::"}[service]
            assert resource.startswith(prefix), statement
            assert all(a.startswith(service + ":") for a in actions), "one service per statement"


def test_orchestrator_has_no_s3_at_all() -> None:
    actions = [a for s in policy_of("orchestrator")["Statement"] for a in _as_list(s["Action"])]
    assert not [a for a in actions if a.startswith("s3:")]


@pytest.mark.parametrize(
    "extra, expected_aws",
    [
        ((), [f"arn:aws:iam::{ACCOUNT}:root"]),
        (
            ("arn:{partition}:iam::{account_id}:user/ops",),
            [f"arn:aws:iam::{ACCOUNT}:root", f"arn:aws:iam::{ACCOUNT}:user/ops"],
        ),
    ],
)
def test_trust_policies(extra: tuple[str, ...], expected_aws: list[str]) -> None:
    roles = render(StackSpec(trusted_principals=extra), ACCOUNT, REGION)["roles"]
    for key, role in roles.items():
        assert role["name"] == f"pixfleet-{key}"
        assert role["arn"] == f"arn:aws:iam::{ACCOUNT}:role/pixfleet-{key}"
        (statement,) = role["trust_policy"]["Statement"]
        assert statement["Action"] == "sts:AssumeRole" and statement["Effect"] == "Allow"
        assert statement["Principal"] == {"Service": "ecs-tasks.amazonaws.com", "AWS": expected_aws}


@pytest.mark.parametrize("count", [1, 3, 7])
def test_redrive_honours_max_receive_count(count: int) -> None:
    queues = render(StackSpec(max_receive_count=count), ACCOUNT, REGION)["queues"]
    redrive = queues["pixfleet-jobs"]["attributes"]["RedrivePolicy"]
    assert redrive == {"deadLetterTargetArn": DLQ, "maxReceiveCount": count}
    assert (
        json.loads(sqs_attributes(queues["pixfleet-jobs"]["attributes"])["RedrivePolicy"])["maxReceiveCount"] == count
    )


def test_queue_attributes_and_s3_may_send() -> None:
    queues = STATE["queues"]
    assert list(queues) == ["pixfleet-jobs-dlq", "pixfleet-jobs"], "the DLQ is created first"
    attributes = sqs_attributes(queues["pixfleet-jobs"]["attributes"])
    assert attributes["VisibilityTimeout"] == "60"
    assert attributes["ReceiveMessageWaitTimeSeconds"] == "20"
    assert all(isinstance(value, str) for value in attributes.values())
    (statement,) = json.loads(attributes["Policy"])["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage" and statement["Resource"] == JOBS
    assert statement["Condition"]["ArnLike"] == {"aws:SourceArn": IN}


def test_buckets_cors_and_notification() -> None:
    inbound, outbound = STATE["buckets"]["pixfleet-input"], STATE["buckets"]["pixfleet-output"]
    (rule,) = inbound["cors"]["CORSRules"]
    assert rule["AllowedMethods"] == ["POST"] and rule["AllowedOrigins"] == ["*"]
    (queue_config,) = inbound["notification"]["QueueConfigurations"]
    assert queue_config["QueueArn"] == JOBS
    assert queue_config["Filter"] == {"Key": {"FilterRules": [{"Name": "prefix", "Value": "incoming/"}]}}
    assert outbound["cors"] is None and outbound["notification"] == {}


@pytest.mark.parametrize(
    "region, partition",
    [("us-east-1", "aws"), ("eu-west-1", "aws"), ("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")],
)
def test_partitions(region: str, partition: str) -> None:
    state = render(SPEC, ACCOUNT, region)
    assert state["partition"] == partition
    assert state["queues"]["pixfleet-jobs"]["arn"] == f"arn:{partition}:sqs:{region}:{ACCOUNT}:pixfleet-jobs"
    assert state["roles"]["api"]["arn"].startswith(f"arn:{partition}:iam::")


@pytest.mark.parametrize(
    "changes, is_error",
    [
        ({}, False),
        ({"max_receive_count": 10, "visibility_timeout": 300}, False),
        ({"max_receive_count": 0}, True),
        ({"visibility_timeout": 50000}, True),
        ({"receive_wait_seconds": 21}, True),
        ({"output_bucket": "pixfleet-input"}, True),
        ({"dlq": "pixfleet-jobs"}, True),
        ({"incoming_prefix": "incoming"}, True),
        ({"incoming_prefix": "uploads/"}, True),
        ({"worker_role": "pixfleet-api"}, True),
    ],
)
def test_spec_validation(changes: dict[str, Any], is_error: bool) -> None:
    spec = StackSpec(**changes)
    assert bool(spec.problems()) is is_error
    if is_error:
        with pytest.raises(ValueError, match="invalid StackSpec"):
            render(spec, ACCOUNT, REGION)


def test_spec_validation_reports_every_problem() -> None:
    assert len(StackSpec(max_receive_count=0, receive_wait_seconds=99).problems()) == 2


def test_stack_outputs_round_trip() -> None:
    outputs = StackOutputs(
        region=REGION,
        account_id=ACCOUNT,
        input_bucket="i",
        output_bucket="o",
        queue_url="http://q",
        queue_arn=JOBS,
        dlq_url="http://d",
        dlq_arn=DLQ,
        role_arns={"api": "a", "worker": "w", "deadletter": "d", "orchestrator": "o"},
    )
    assert StackOutputs.from_dict(json.loads(json.dumps(outputs.to_dict()))) == outputs
    with pytest.raises(ValueError, match="queue_url"):
        StackOutputs.from_dict({k: v for k, v in outputs.to_dict().items() if k != "queue_url"})


def test_container_credentials_shape() -> None:
    creds = TemporaryCredentials("ASIA1", "secret", "token", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC), "arn:r")
    assert creds.to_container_json() == {
        "AccessKeyId": "ASIA1",
        "SecretAccessKey": "secret",
        "Token": "token",
        "Expiration": "2030-01-02T03:04:05Z",
        "RoleArn": "arn:r",
    }


NOW = datetime(2030, 1, 1, tzinfo=UTC)
LATER = (NOW + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
FIELDS = {"key": "incoming/a.png", "policy": "p", "x-amz-signature": "s", "x-amz-security-token": "t"}
CONDITIONS = [{"bucket": "b"}, ["starts-with", "$key", "incoming/"], {"x-amz-security-token": "t"}]


@pytest.mark.parametrize(
    "policy, fields, length, is_error",
    [
        ({"expiration": LATER, "conditions": CONDITIONS}, FIELDS, 3, False),
        ({"expiration": "2029-12-31T00:00:00Z", "conditions": CONDITIONS}, FIELDS, 3, True),
        ({"conditions": CONDITIONS}, FIELDS, 3, True),
        ({"expiration": LATER, "conditions": CONDITIONS}, {**FIELDS, "key": "uploads/a.png"}, 3, True),
        ({"expiration": LATER, "conditions": CONDITIONS}, {**FIELDS, "x-amz-security-token": "other"}, 3, True),
        ({"expiration": LATER, "conditions": CONDITIONS}, {**FIELDS, "Content-Type": "image/png"}, 3, True),
        ({"expiration": LATER, "conditions": CONDITIONS}, {**FIELDS, "x-ignore-me": "1"}, 3, False),
        ({"expiration": LATER, "conditions": [*CONDITIONS, ["content-length-range", 1, 2]]}, FIELDS, 3, True),
        ({"expiration": LATER, "conditions": [*CONDITIONS, ["content-length-range", 1, 3]]}, FIELDS, 3, False),
        ({"expiration": LATER, "conditions": [{"bucket": "other"}, *CONDITIONS[1:]]}, FIELDS, 3, True),
    ],
)
def test_post_policy_rules(policy: dict[str, Any], fields: dict[str, str], length: int, is_error: bool) -> None:
    assert (post_policy_problem(policy, fields, "b", length, NOW) is not None) is is_error


# --- provisioning against moto over HTTP -------------------------------------------------------


async def snapshot(url: str, region: str, spec: StackSpec, creds: Any = None) -> dict[str, Any]:
    """Everything provision() sets, as the services report it."""
    session = get_session()
    kwargs = client_kwargs(url, region, creds)
    async with (
        session.create_client("s3", **kwargs) as s3,
        session.create_client("sqs", **kwargs) as sqs,
        session.create_client("iam", **kwargs) as iam,
    ):
        state: dict[str, Any] = {"buckets": {}, "queues": {}, "roles": {}}
        for bucket in (spec.input_bucket, spec.output_bucket):
            notification = await s3.get_bucket_notification_configuration(Bucket=bucket)
            notification.pop("ResponseMetadata")
            try:
                cors = (await s3.get_bucket_cors(Bucket=bucket))["CORSRules"]
            except s3.exceptions.ClientError:
                cors = None
            state["buckets"][bucket] = {"cors": cors, "notification": notification}
        for queue in (spec.queue, spec.dlq):
            queue_url = (await sqs.get_queue_url(QueueName=queue))["QueueUrl"]
            attributes = (await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"]))["Attributes"]
            stable = {k: v for k, v in attributes.items() if not k.startswith("Approximate")}
            state["queues"][queue] = {"url": queue_url, "attributes": stable}
        for name in spec.role_names().values():
            role = (await iam.get_role(RoleName=name))["Role"]
            names = (await iam.list_role_policies(RoleName=name))["PolicyNames"]
            inline = {n: (await iam.get_role_policy(RoleName=name, PolicyName=n))["PolicyDocument"] for n in names}
            state["roles"][name] = {
                "id": role["RoleId"],
                "trust": role["AssumeRolePolicyDocument"],
                "policies": inline,
            }
        return state


async def queue_bodies(url: str, region: str, queue_url: str) -> list[dict[str, Any]]:
    """Every message on a queue (received and left invisible; for private servers only)."""
    async with get_session().create_client("sqs", **client_kwargs(url, region, None)) as sqs:
        bodies = []
        while messages := (
            await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        ).get("Messages"):
            bodies += [json.loads(m["Body"]) for m in messages]
        return bodies


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
async def test_provision_twice_changes_nothing(fresh_moto, region: str) -> None:
    server = fresh_moto()
    spec = StackSpec(max_receive_count=5)
    first = await provision(server.url, region, spec)
    before = await snapshot(server.url, region, spec)
    second = await provision(server.url, region, spec)
    after = await snapshot(server.url, region, spec)

    assert first == second
    assert before == after
    assert first.account_id == ACCOUNT and first.region == region
    assert first.queue_url == before["queues"]["pixfleet-jobs"]["url"]
    attributes = after["queues"]["pixfleet-jobs"]["attributes"]
    assert json.loads(attributes["RedrivePolicy"]) == {"deadLetterTargetArn": first.dlq_arn, "maxReceiveCount": 5}
    assert attributes["QueueArn"] == first.queue_arn
    assert after["queues"]["pixfleet-jobs-dlq"]["attributes"]["QueueArn"] == first.dlq_arn
    # S3 sends a test event whenever the notification is written; the second run must not write it.
    events = [body.get("Event") for body in await queue_bodies(server.url, region, first.queue_url)]
    assert events == ["s3:TestEvent"]


async def test_provision_repairs_drift(fresh_moto) -> None:
    server = fresh_moto()
    outputs = await provision(server.url, REGION)
    desired = await snapshot(server.url, REGION, SPEC)
    session = get_session()
    kwargs = client_kwargs(server.url, REGION, None)
    async with session.create_client("sqs", **kwargs) as sqs, session.create_client("iam", **kwargs) as iam:
        await sqs.set_queue_attributes(QueueUrl=outputs.queue_url, Attributes={"VisibilityTimeout": "5"})
        await iam.put_role_policy(
            RoleName="pixfleet-worker",
            PolicyName="too-broad",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            ),
        )
        only_ecs = {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}
        await iam.update_assume_role_policy(
            RoleName="pixfleet-api", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [only_ecs]})
        )
    assert await snapshot(server.url, REGION, SPEC) != desired
    await provision(server.url, REGION)
    assert unmodified(await snapshot(server.url, REGION, SPEC)) == unmodified(desired)


def unmodified(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` without the queues' LastModifiedTimestamp (a repair rightly changes it)."""
    for queue in state["queues"].values():
        queue["attributes"].pop("LastModifiedTimestamp")
    return state


async def test_provision_again_under_enforcement_is_harmless(emulator) -> None:
    spec = emulator_spec()
    before = await snapshot(emulator.url, emulator.region, spec, emulator.bootstrap)
    outputs = await provision(emulator.url, emulator.region, spec, credentials=emulator.bootstrap)
    assert outputs == emulator.outputs
    assert await snapshot(emulator.url, emulator.region, spec, emulator.bootstrap) == before


async def test_only_incoming_uploads_raise_events(emulator, role_session, aws_client, take_messages) -> None:
    api, worker = await role_session("api"), await role_session("worker")
    run = uuid.uuid4().hex
    incoming, uploaded = f"incoming/{run}/a b.png", f"uploads/{run}/a.png"
    async with aws_client("s3", api) as s3:
        await s3.put_object(Bucket=emulator.outputs.input_bucket, Key=incoming, Body=b"img")
        await s3.put_object(Bucket=emulator.outputs.input_bucket, Key=uploaded, Body=b"img")

    def ours(body: Any) -> bool:
        records = body.get("Records", []) if isinstance(body, dict) else []
        return any(run in unquote_plus(r["s3"]["object"]["key"]) for r in records)

    bodies = await take_messages(emulator.outputs.queue_url, worker, ours)
    keys = [unquote_plus(r["s3"]["object"]["key"]) for body in bodies for r in body["Records"]]
    assert keys == [incoming]
    (record,) = bodies[0]["Records"]
    assert record["eventName"].startswith("ObjectCreated:")
    assert record["s3"]["bucket"]["name"] == emulator.outputs.input_bucket
    assert record["s3"]["object"]["size"] == 3


def test_dead_server_reports_its_output() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = MotoServer(port=taken.getsockname()[1], startup_timeout=20)
        with pytest.raises(EmulatorUnavailable, match="exited with status") as failure:
            server.start()
    assert "in use" in str(failure.value).lower()
    assert not server.running
