"""ECS's resource names: ARNs built the way ECS builds them, and references (short names or ARNs) read back.

ECS accepts either form almost everywhere: ``worker`` or
``arn:aws:ecs:us-east-1:123456789012:service/pixfleet/worker``. :func:`short_name` turns either into the
name part, and refuses an ARN of the wrong kind (a task ARN where a cluster is expected) with ECS's
``InvalidParameterException``.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.orchestrator.awsapi.errors import invalid_parameter

KINDS = ("cluster", "service", "task", "task-definition", "container-instance")


@dataclass(frozen=True)
class Arns:
    """Builds ECS ARNs for one region and account (the new, cluster-qualified format)."""

    region: str
    account: str
    partition: str = "aws"

    def _arn(self, resource: str) -> str:
        return f"arn:{self.partition}:ecs:{self.region}:{self.account}:{resource}"

    def cluster(self, name: str) -> str:
        return self._arn(f"cluster/{name}")

    def service(self, cluster: str, name: str) -> str:
        return self._arn(f"service/{cluster}/{name}")

    def task(self, cluster: str, task_id: str) -> str:
        return self._arn(f"task/{cluster}/{task_id}")

    def task_definition(self, key: str) -> str:
        return self._arn(f"task-definition/{key}")

    def container_instance(self, cluster: str, instance_id: str) -> str:
        return self._arn(f"container-instance/{cluster}/{instance_id}")


@dataclass(frozen=True)
class Reference:
    """A parsed ARN: its kind, the cluster it names (when it names one) and the resource's own name."""

    kind: str
    name: str
    cluster: str | None = None


def parse_arn(arn: str) -> Reference:
    """``arn:aws:ecs:REGION:ACCOUNT:KIND/[CLUSTER/]NAME`` → its parts; ``InvalidParameterException`` otherwise."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "ecs" or "/" not in parts[5]:
        raise invalid_parameter(f"Invalid ARN: {arn!r} is not an ECS resource ARN.")
    kind, _, rest = parts[5].partition("/")
    if kind not in KINDS or not rest:
        raise invalid_parameter(f"Invalid ARN: {arn!r} names no ECS resource.")
    if kind in ("service", "task", "container-instance") and "/" in rest:
        cluster, _, name = rest.partition("/")
        return Reference(kind, name, cluster)
    return Reference(kind, rest)


def short_name(ref: str, kind: str) -> str:
    """A short name or an ARN of ``kind`` → the short name (for task definitions: ``family[:revision]``)."""
    if not ref.startswith("arn:"):
        return ref
    parsed = parse_arn(ref)
    if parsed.kind != kind:
        raise invalid_parameter(f"Invalid identifier: {ref!r} is a {parsed.kind} ARN, not a {kind} ARN.")
    return parsed.name
