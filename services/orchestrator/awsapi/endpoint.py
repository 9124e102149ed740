"""The one place that says which AWS APIs the control plane answers on ``POST /``, and who may call them.

:func:`aws_tables` maps botocore service names to their :class:`AwsService` tables; to serve another AWS
JSON API (Application Auto Scaling), add its table there. :func:`admin_signer` derives the control plane's
SigV4 key pair from the admin token ``pixfleet up`` writes to ``stack.json``: the access key id is a digest
of the token (so clients can compute it) and the secret is the token itself.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path

from services.orchestrator.awsapi.audit import AuditLog
from services.orchestrator.awsapi.autoscaling import ApplicationAutoScaling
from services.orchestrator.awsapi.ecs import EcsControlPlane
from services.orchestrator.awsapi.protocol import AwsJsonEndpoint, AwsService
from services.orchestrator.awsapi.signing import Signer
from services.orchestrator.orchestrator import Orchestrator


def aws_tables(
    orchestrator: Orchestrator, ecs: EcsControlPlane, autoscaling: ApplicationAutoScaling | None = None
) -> dict[str, AwsService]:
    """Every AWS API served on ``POST /``, by botocore service name. Add a table here to serve another."""
    tables = {"ecs": ecs.table()}
    if autoscaling is not None:
        tables["application-autoscaling"] = autoscaling.service()
    return tables


def admin_signer(admin_token: str, account: str) -> Signer:
    """The admin key pair: ``AKIA`` + 16 base32 characters of SHA-256(token), and the token as the secret."""
    digest = base64.b32encode(hashlib.sha256(admin_token.encode()).digest()).decode()[:16]
    return Signer(f"AKIA{digest}", admin_token, f"arn:aws:iam::{account}:user/pixfleet-admin")


def create_aws_endpoint(
    tables: dict[str, AwsService],
    signers: list[Signer],
    *,
    region: str,
    state_dir: Path | None,
    task_key: Callable[[str], str | None],
    validate_responses: bool = False,
) -> AwsJsonEndpoint:
    """The JSON 1.1 endpoint over ``tables``, its calls audited to ``audit.jsonl`` in ``state_dir``."""
    by_key = {s.access_key_id: s for s in signers}
    return AwsJsonEndpoint(
        list(tables.values()),
        lambda: by_key,
        region=region,
        audit=AuditLog(state_dir / "audit.jsonl" if state_dir else None),
        task_key=task_key,
        validate_responses=validate_responses,
    )
