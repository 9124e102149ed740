"""Make AWS (or moto, or LocalStack) match :func:`infra.stack.render`.

Every step is idempotent: what exists is compared with the desired state and
updated in place only where it differs, so running :func:`provision` again
changes nothing (not even modification timestamps) and does not fail. This
matters most for the bucket notification: S3 sends an ``s3:TestEvent`` message
to the queue each time it is written.

Order matters for real AWS: queues (with the policy letting S3 send) exist before
the bucket notification that targets them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import unquote

from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from infra.credentials import Credentials, client_kwargs
from infra.stack import ROLE_KEYS, StackSpec, render, sqs_attributes


@dataclass(frozen=True)
class StackOutputs:
    """What the services need to know about a provisioned stack."""

    region: str
    account_id: str
    input_bucket: str
    output_bucket: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    dlq_arn: str
    role_arns: dict[str, str] = field(default_factory=dict)  # "api" | "worker" | "deadletter" | "orchestrator" → ARN

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StackOutputs:
        missing = [name for name in cls.__dataclass_fields__ if name not in data]
        if missing:
            raise ValueError(f"stack outputs lack {', '.join(missing)}")
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


async def provision(
    endpoint_url: str | None,
    region: str,
    spec: StackSpec = StackSpec(),
    *,
    credentials: Credentials | None = None,
) -> StackOutputs:
    """Create or update the pixfleet stack; ``endpoint_url=None`` means real AWS.

    Errors from AWS propagate as botocore ``ClientError`` (see :func:`pipeline.errors.classify`).
    """
    spec.validate()
    session = get_session()
    kwargs = client_kwargs(endpoint_url, region, credentials)
    async with (
        session.create_client("sts", **kwargs) as sts,
        session.create_client("s3", **kwargs) as s3,
        session.create_client("sqs", **kwargs) as sqs,
        session.create_client("iam", **kwargs) as iam,
    ):
        account_id = (await sts.get_caller_identity())["Account"]
        desired = render(spec, account_id, region)

        for bucket in desired["buckets"]:
            await _ensure_bucket(s3, bucket, region)
        queue_urls = {
            name: await _ensure_queue(sqs, name, state["attributes"]) for name, state in desired["queues"].items()
        }
        for bucket, state in desired["buckets"].items():
            await _apply_cors(s3, bucket, state["cors"])
            await _apply_notification(s3, bucket, state["notification"])
            await _apply_lifecycle(s3, bucket, state["lifecycle"])
        for key in ROLE_KEYS:
            await _ensure_role(iam, desired["roles"][key])

    queues = desired["queues"]
    return StackOutputs(
        region=region,
        account_id=account_id,
        input_bucket=spec.input_bucket,
        output_bucket=spec.output_bucket,
        queue_url=queue_urls[spec.queue],
        queue_arn=queues[spec.queue]["arn"],
        dlq_url=queue_urls[spec.dlq],
        dlq_arn=queues[spec.dlq]["arn"],
        role_arns={key: desired["roles"][key]["arn"] for key in ROLE_KEYS},
    )


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


async def _ensure_bucket(s3: Any, bucket: str, region: str) -> None:
    try:
        await s3.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
            raise
    args: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":  # us-east-1 refuses an explicit LocationConstraint
        args["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        await s3.create_bucket(**args)
    except ClientError as exc:
        if _code(exc) != "BucketAlreadyOwnedByYou":  # a concurrent provision got there first
            raise


async def _apply_cors(s3: Any, bucket: str, cors: dict[str, Any] | None) -> None:
    try:
        current = {"CORSRules": (await s3.get_bucket_cors(Bucket=bucket))["CORSRules"]}
    except ClientError as exc:
        if _code(exc) != "NoSuchCORSConfiguration":
            raise
        current = None
    if _same(current, cors):
        return
    if cors is not None:
        await s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=cors)
    else:
        await s3.delete_bucket_cors(Bucket=bucket)


async def _apply_lifecycle(s3: Any, bucket: str, desired: dict[str, Any]) -> None:
    try:
        current = {"Rules": (await s3.get_bucket_lifecycle_configuration(Bucket=bucket))["Rules"]}
    except ClientError as exc:
        if _code(exc) != "NoSuchLifecycleConfiguration":
            raise
        current = None
    if current is not None and _same(_lifecycle_key(current), _lifecycle_key(desired)):
        return
    await s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=desired)


def _lifecycle_key(config: dict[str, Any]) -> list[Any]:
    """The rules as S3 echoes them back (an empty prefix filter may come back as ``{}`` or ``{"Prefix": ""}``)."""
    rules = []
    for rule in config.get("Rules", []):
        rule = dict(rule)
        if rule.get("Filter") in ({}, {"Prefix": ""}):
            rule["Filter"] = {"Prefix": ""}
        if rule.get("Prefix") == "":
            rule.pop("Prefix")
        rules.append(rule)
    return sorted(rules, key=lambda r: str(r.get("ID")))


async def _apply_notification(s3: Any, bucket: str, desired: dict[str, Any]) -> None:
    current = await s3.get_bucket_notification_configuration(Bucket=bucket)
    if _notification_key(current) == _notification_key(desired):
        return
    await s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=desired)


def _notification_key(config: dict[str, Any]) -> str:
    """A comparable form of a notification configuration (what S3 echoes back, sans metadata)."""
    kinds = ("QueueConfigurations", "TopicConfigurations", "LambdaFunctionConfigurations")
    relevant = {kind: config.get(kind, []) for kind in kinds}
    if "EventBridgeConfiguration" in config:
        relevant["EventBridgeConfiguration"] = config["EventBridgeConfiguration"]
    for entries in relevant.values():
        for entry in entries if isinstance(entries, list) else []:
            entry.setdefault("Filter", {})
            entry["Events"] = sorted(entry.get("Events", []))
            for rule in entry["Filter"].get("Key", {}).get("FilterRules", []):
                rule["Name"] = rule["Name"].lower()  # S3 answers "Prefix" for "prefix"
    return json.dumps(relevant, sort_keys=True)


async def _ensure_queue(sqs: Any, name: str, attributes: dict[str, Any]) -> str:
    desired = sqs_attributes(attributes)
    try:
        url = (await sqs.get_queue_url(QueueName=name))["QueueUrl"]
    except ClientError as exc:
        if _code(exc) not in {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}:
            raise
        return (await sqs.create_queue(QueueName=name, Attributes=desired))["QueueUrl"]
    current = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(desired)))["Attributes"]
    if any(not _same_attribute(current.get(key), value) for key, value in desired.items()):
        # All at once: SQS (and moto) would otherwise drop a Policy that is not restated.
        await sqs.set_queue_attributes(QueueUrl=url, Attributes=desired)
    return url


def _same_attribute(current: str | None, desired: str) -> bool:
    """SQS echoes JSON attributes re-serialised (and numbers in documents as strings)."""
    if current == desired:
        return True
    if current is None or not desired.startswith("{"):
        return False
    return _same(json.loads(current), json.loads(desired))


def _same(current: Any, desired: Any) -> bool:
    """Structural equality of AWS documents, ignoring key order and number-vs-string spelling."""
    return _canonical(current) == _canonical(desired)


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    return str(value)


async def _ensure_role(iam: Any, role: dict[str, Any]) -> None:
    name = role["name"]
    trust = role["trust_policy"]
    try:
        current_trust = (await iam.get_role(RoleName=name))["Role"]["AssumeRolePolicyDocument"]
    except ClientError as exc:
        if _code(exc) != "NoSuchEntity":
            raise
        await iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(trust),
            Description="pixfleet task role (infra/stack.py)",
        )
    else:
        if not _same(_document(current_trust), trust):
            await iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))

    existing = (await iam.list_role_policies(RoleName=name))["PolicyNames"]
    for policy_name, document in role["policies"].items():
        if policy_name in existing:
            current = (await iam.get_role_policy(RoleName=name, PolicyName=policy_name))["PolicyDocument"]
            if _same(_document(current), document):
                continue
        await iam.put_role_policy(RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(document))
    # Least privilege includes forgetting: inline policies no longer declared are removed.
    for stale in set(existing) - set(role["policies"]):
        await iam.delete_role_policy(RoleName=name, PolicyName=stale)


def _document(value: str | dict[str, Any]) -> dict[str, Any]:
    """IAM answers policy documents decoded by botocore, or URL-encoded JSON text."""
    return value if isinstance(value, dict) else json.loads(unquote(value))
