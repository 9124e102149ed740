"""What pixfleet needs to exist in AWS, declared once.

:class:`StackSpec` names the buckets, queues, prefixes and roles; :func:`render`
turns it into the complete desired state for one account and region — bucket
CORS and event notifications, queue attributes and policies, role trust and
permission documents. Both are pure (no I/O), so the stack can be read and
table-tested without AWS; :mod:`infra.provision` applies the rendered state.

The data path the permissions follow::

    browser ──presigned POST──▶ input/incoming/* ──S3 event──▶ jobs queue
    api ─────streamed PUT─────▶ input/uploads/*  ──api sends──▶ jobs queue
    worker ◀── jobs queue; reads input, writes output/results/*; dead letters ▶ DLQ
    deadletter ◀── DLQ (reads, never deletes): records each job that reached it as failed
    orchestrator: watches queue depths, assumes the api/worker/deadletter roles for its tasks
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ECS_TASKS_PRINCIPAL = "ecs-tasks.amazonaws.com"
S3_SERVICE_PRINCIPAL = "s3.amazonaws.com"
POLICY_VERSION = "2012-10-17"

ROLE_KEYS = ("api", "worker", "deadletter", "orchestrator")
TASK_ROLE_KEYS = ("api", "worker", "deadletter")  # roles the orchestrator hands to tasks


@dataclass(frozen=True)
class StackSpec:
    """The names and knobs of the pixfleet stack; defaults are the production shape."""

    input_bucket: str = "pixfleet-input"
    output_bucket: str = "pixfleet-output"
    queue: str = "pixfleet-jobs"
    dlq: str = "pixfleet-jobs-dlq"

    visibility_timeout: int = 60
    max_receive_count: int = 3
    message_retention_seconds: int = 4 * 24 * 3600
    dlq_retention_seconds: int = 14 * 24 * 3600
    receive_wait_seconds: int = 20
    abort_incomplete_uploads_days: int = 1  # lifecycle: multipart uploads a killed API left behind

    uploads_prefix: str = "uploads/"  # the API streams uploads here
    incoming_prefix: str = "incoming/"  # browsers POST here directly; S3 events feed the queue
    results_prefix: str = "results/"  # workers write here, in the output bucket

    api_role: str = "pixfleet-api"
    worker_role: str = "pixfleet-worker"
    deadletter_role: str = "pixfleet-deadletter"
    orchestrator_role: str = "pixfleet-orchestrator"

    cors_allowed_origins: tuple[str, ...] = ("*",)

    # Extra AWS principals (ARN templates; ``{account_id}`` and ``{partition}`` are filled in)
    # trusted by all three roles besides ECS tasks and the account root. Real AWS needs none:
    # the root principal delegates to identity policies. Moto matches trust principals by exact
    # caller ARN and never expands ``:root``, so the emulator lists its callers here.
    trusted_principals: tuple[str, ...] = field(default=())

    def role_names(self) -> dict[str, str]:
        """Role key ("api", "worker", "orchestrator") → IAM role name."""
        return {
            "api": self.api_role,
            "worker": self.worker_role,
            "deadletter": self.deadletter_role,
            "orchestrator": self.orchestrator_role,
        }

    def problems(self) -> list[str]:
        """Every reason this spec is unusable; empty when it is fine."""
        found: list[str] = []
        if not 0 <= self.visibility_timeout <= 43200:
            found.append("visibility_timeout must be within 0..43200 seconds")
        if not 1 <= self.max_receive_count <= 1000:
            found.append("max_receive_count must be within 1..1000")
        for name in ("message_retention_seconds", "dlq_retention_seconds"):
            if not 60 <= getattr(self, name) <= 1209600:
                found.append(f"{name} must be within 60..1209600 seconds")
        if not 0 <= self.receive_wait_seconds <= 20:
            found.append("receive_wait_seconds must be within 0..20")
        if self.input_bucket == self.output_bucket:
            found.append("input and output buckets must differ")
        if self.queue == self.dlq:
            found.append("the job queue and its dead-letter queue must differ")
        for name in ("uploads_prefix", "incoming_prefix", "results_prefix"):
            value = getattr(self, name)
            if not value.endswith("/") or value.startswith("/") or "*" in value:
                found.append(f"{name} must look like 'name/' (got {value!r})")
        if self.uploads_prefix == self.incoming_prefix:
            found.append("uploads_prefix and incoming_prefix must differ (only incoming/ raises events)")
        if len(set(self.role_names().values())) != len(ROLE_KEYS):
            found.append("the role names must differ")
        if self.abort_incomplete_uploads_days < 1:
            found.append("abort_incomplete_uploads_days must be >= 1")
        return found

    def validate(self) -> StackSpec:
        """Raise ``ValueError`` listing every problem at once; return ``self`` when valid."""
        found = self.problems()
        if found:
            raise ValueError("invalid StackSpec: " + "; ".join(found))
        return self


# --- ARNs ------------------------------------------------------------------------------------


def partition_for(region: str) -> str:
    """The ARN partition of a region ("aws", "aws-cn", "aws-us-gov")."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def bucket_arn(partition: str, bucket: str, key_pattern: str | None = None) -> str:
    return f"arn:{partition}:s3:::{bucket}" + (f"/{key_pattern}" if key_pattern is not None else "")


def queue_arn(partition: str, region: str, account_id: str, queue: str) -> str:
    return f"arn:{partition}:sqs:{region}:{account_id}:{queue}"


def role_arn(partition: str, account_id: str, role: str) -> str:
    return f"arn:{partition}:iam::{account_id}:role/{role}"


# --- documents -------------------------------------------------------------------------------


def _statement(sid: str, actions: list[str], resources: list[str]) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}


def _policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": POLICY_VERSION, "Statement": list(statements)}


def trust_policy(spec: StackSpec, account_id: str, partition: str) -> dict[str, Any]:
    """Who may assume a pixfleet role: ECS tasks, the account root, and ``spec.trusted_principals``."""
    aws = [f"arn:{partition}:iam::{account_id}:root"]
    aws += [p.format(account_id=account_id, partition=partition) for p in spec.trusted_principals]
    return _policy(
        {
            "Sid": "TrustedCallers",
            "Effect": "Allow",
            "Principal": {"Service": ECS_TASKS_PRINCIPAL, "AWS": aws},
            "Action": "sts:AssumeRole",
        }
    )


def role_policies(spec: StackSpec, account_id: str, region: str) -> dict[str, dict[str, Any]]:
    """Role key → its one least-privilege inline policy document, every resource named."""
    part = partition_for(region)
    inp, out = spec.input_bucket, spec.output_bucket
    uploads = bucket_arn(part, inp, spec.uploads_prefix + "*")
    incoming = bucket_arn(part, inp, spec.incoming_prefix + "*")
    results = bucket_arn(part, out, spec.results_prefix + "*")
    jobs = queue_arn(part, region, account_id, spec.queue)
    dlq = queue_arn(part, region, account_id, spec.dlq)
    return {
        "api": _policy(
            _statement(
                "AcceptUploads",
                ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts", "s3:GetObject"],
                [uploads, incoming],
            ),
            _statement("CleanUpRejectedUploads", ["s3:DeleteObject"], [uploads]),
            _statement("ServeResults", ["s3:GetObject"], [results]),
            _statement("EnqueueJobs", ["sqs:SendMessage", "sqs:GetQueueAttributes"], [jobs]),
        ),
        "worker": _policy(
            _statement("ReadSources", ["s3:GetObject"], [uploads, incoming]),
            _statement("WriteResults", ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"], [results]),
            _statement(
                "ConsumeJobs",
                [
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes",
                ],
                [jobs],
            ),
            _statement("DeadLetterJobs", ["sqs:SendMessage"], [dlq]),
        ),
        "deadletter": _policy(
            _statement("RecordFailedJobs", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], [results]),
            _statement(
                "WatchDeadLetters",
                ["sqs:ReceiveMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"],
                [dlq],
            ),
            _statement("ReadJobQueueSettings", ["sqs:GetQueueAttributes"], [jobs]),  # its maxReceiveCount
        ),
        "orchestrator": _policy(
            _statement("WatchQueues", ["sqs:GetQueueAttributes"], [jobs, dlq]),
            _statement(
                "IssueTaskCredentials",
                ["sts:AssumeRole"],
                [role_arn(part, account_id, spec.role_names()[key]) for key in TASK_ROLE_KEYS],
            ),
        ),
    }


def render(spec: StackSpec, account_id: str, region: str) -> dict[str, Any]:
    """The full desired state of the stack in one account and region.

    Shape (JSON-compatible; documents are dicts, :func:`sqs_attributes` serialises queues)::

        {"account_id", "region", "partition",
         "buckets": {name: {"arn", "cors": dict | None, "notification": dict, "lifecycle": dict}},
         "queues": {name: {"arn", "attributes": {...}}},        # DLQ first: creation order
         "roles": {"api"|"worker"|"deadletter"|"orchestrator": {"name", "arn", "trust_policy", "policies": {...}}}}
    """
    spec.validate()
    part = partition_for(region)
    input_arn = bucket_arn(part, spec.input_bucket)
    jobs_arn = queue_arn(part, region, account_id, spec.queue)
    dlq_arn = queue_arn(part, region, account_id, spec.dlq)

    incoming_to_jobs = {
        "Id": "pixfleet-incoming-to-jobs",
        "QueueArn": jobs_arn,
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": spec.incoming_prefix}]}},
    }
    browser_uploads = {
        "CORSRules": [
            {
                "ID": "browser-direct-uploads",
                "AllowedMethods": ["POST"],
                "AllowedOrigins": list(spec.cors_allowed_origins),
                "AllowedHeaders": ["*"],
                "ExposeHeaders": ["ETag", "Location"],
                "MaxAgeSeconds": 3000,
            }
        ]
    }
    s3_may_notify = _policy(
        {
            "Sid": "InputBucketEvents",
            "Effect": "Allow",
            "Principal": {"Service": S3_SERVICE_PRINCIPAL},
            "Action": "sqs:SendMessage",
            "Resource": jobs_arn,
            "Condition": {
                "ArnLike": {"aws:SourceArn": input_arn},
                "StringEquals": {"aws:SourceAccount": account_id},
            },
        }
    )

    abandoned_uploads = {
        "Rules": [
            {
                "ID": "abort-incomplete-multipart-uploads",
                "Status": "Enabled",
                "Filter": {"Prefix": ""},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": spec.abort_incomplete_uploads_days},
            }
        ]
    }
    names = spec.role_names()
    policies = role_policies(spec, account_id, region)
    trust = trust_policy(spec, account_id, part)
    return {
        "account_id": account_id,
        "region": region,
        "partition": part,
        "buckets": {
            spec.input_bucket: {
                "arn": input_arn,
                "cors": browser_uploads,
                "notification": {"QueueConfigurations": [incoming_to_jobs]},
                "lifecycle": abandoned_uploads,
            },
            spec.output_bucket: {
                "arn": bucket_arn(part, spec.output_bucket),
                "cors": None,
                "notification": {},
                "lifecycle": abandoned_uploads,
            },
        },
        "queues": {
            spec.dlq: {
                "arn": dlq_arn,
                "attributes": {"MessageRetentionPeriod": spec.dlq_retention_seconds},
            },
            spec.queue: {
                "arn": jobs_arn,
                "attributes": {
                    "VisibilityTimeout": spec.visibility_timeout,
                    "MessageRetentionPeriod": spec.message_retention_seconds,
                    "ReceiveMessageWaitTimeSeconds": spec.receive_wait_seconds,
                    "RedrivePolicy": {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": spec.max_receive_count},
                    "Policy": s3_may_notify,
                },
            },
        },
        "roles": {
            key: {
                "name": names[key],
                "arn": role_arn(part, account_id, names[key]),
                "trust_policy": trust,
                "policies": {names[key]: policies[key]},
            }
            for key in ROLE_KEYS
        },
    }


def sqs_attributes(attributes: dict[str, Any]) -> dict[str, str]:
    """Rendered queue attributes as SQS takes them: every value a string, documents as JSON."""
    return {
        name: json.dumps(value, separators=(",", ":")) if isinstance(value, dict) else str(value)
        for name, value in attributes.items()
    }
