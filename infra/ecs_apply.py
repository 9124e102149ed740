"""Apply the one description (``infra/ecs`` + ``infra/taskdefs``) through the ECS and Application Auto Scaling APIs.

What ``pixfleet up`` does after the control plane answers (and the compose stack's orchestrator, once its
API listens), with the calls a user would make with boto3 or ``aws ecs``: ``CreateCluster``;
``RegisterTaskDefinition`` for each family *only when its content differs from the latest ACTIVE
revision* (so revisions do not pile up across runs); ``CreateService`` for a service that does not
exist, else ``UpdateService`` to the latest revision (its desired count left to the scaler or to the
user); ``RegisterScalableTarget`` and ``PutScalingPolicy`` for the scaling files.

The decisions are pure functions (:func:`same_task_definition`, :func:`plan_service`) with table tests; the
calls are thin.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.config
import botocore.session

from infra import ECS_DIR, TASKDEFS_DIR


@dataclass(frozen=True)
class Description:
    """The stack in AWS's request shapes, as the files in ``infra/`` hold it."""

    cluster: dict[str, Any]
    task_definitions: list[dict[str, Any]]
    services: list[dict[str, Any]]
    scaling: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(
        cls, ecs_dir: Path = ECS_DIR, taskdefs_dir: Path = TASKDEFS_DIR, overrides: Mapping[str, Any] | None = None
    ) -> Description:
        """Read the files; ``overrides`` (serviceName → fields) adjust services, e.g. a test's desired count."""

        def read(path: Path) -> Any:
            return json.loads(path.read_text())

        services = [read(p) for p in sorted((ecs_dir / "services").glob("*.json"))]
        for service in services:
            service.update((overrides or {}).get(service["serviceName"], {}))
        return cls(
            cluster=read(ecs_dir / "cluster.json"),
            task_definitions=[read(p) for p in sorted(taskdefs_dir.glob("*.json"))],
            services=services,
            scaling=[read(p) for p in sorted((ecs_dir / "scaling").glob("*.json"))],
        )

    def write(self, ecs_dir: Path, taskdefs_dir: Path) -> None:
        """The description as files again, in the shipped layout (what a deployment applied, for people to read)."""

        def put(path: Path, doc: Any) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(doc, indent=2) + "\n")

        put(ecs_dir / "cluster.json", self.cluster)
        for service in self.services:
            put(ecs_dir / "services" / f"{service['serviceName']}.json", service)
        for scaling in self.scaling:
            put(
                ecs_dir / "scaling" / f"{scaling['RegisterScalableTarget']['ResourceId'].rsplit('/', 1)[-1]}.json",
                scaling,
            )
        for taskdef in self.task_definitions:
            put(taskdefs_dir / f"{taskdef['family'].removeprefix('pixfleet-')}.json", taskdef)

    # --- what a deployment adjusts (tests, the embedded stack, compose) --------------------------

    def service(self, name: str) -> dict[str, Any]:
        """The ``CreateService`` body of ``name`` (to change in place)."""
        return next(s for s in self.services if s["serviceName"] == name)

    def task_definition(self, family: str) -> dict[str, Any]:
        """The ``RegisterTaskDefinition`` body of ``family`` (to change in place)."""
        return next(t for t in self.task_definitions if t["family"] == family)

    def scaling_of(self, service: str) -> dict[str, Any] | None:
        """The ``RegisterScalableTarget`` + ``PutScalingPolicy`` bodies of ``service``, if it is scaled."""
        return next(
            (s for s in self.scaling if s["RegisterScalableTarget"]["ResourceId"].endswith(f"/{service}")), None
        )

    def set_scaling(
        self,
        service: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        policy: Mapping[str, Any] | None = None,
    ) -> None:
        """Change a scaled service's capacity range and its target-tracking fields (``TargetValue``,
        ``ScaleInCooldown``, ``ScaleOutCooldown``, ``DisableScaleIn``); its desired count follows the minimum up."""
        scaling = self.scaling_of(service)
        if scaling is None:
            raise KeyError(f"{service} has no scaling in the description")
        target = scaling["RegisterScalableTarget"]
        if minimum is not None:
            target["MinCapacity"] = minimum
        if maximum is not None:
            target["MaxCapacity"] = maximum
        target["MaxCapacity"] = max(target["MaxCapacity"], target["MinCapacity"])
        for body in scaling.get("PutScalingPolicy", []):
            body["TargetTrackingScalingPolicyConfiguration"].update(policy or {})
        wanted = self.service(service)
        wanted["desiredCount"] = max(wanted.get("desiredCount", 1), target["MinCapacity"])

    def name_queue(self, queue: str) -> None:
        """Point the scaling policies' SQS metrics at ``queue`` (the shipped files name the default queue)."""
        for entry in self.scaling:
            for policy in entry.get("PutScalingPolicy", []):
                spec = policy["TargetTrackingScalingPolicyConfiguration"].get("CustomizedMetricSpecification", {})
                for metric in spec.get("Metrics", []):
                    stat = metric.get("MetricStat", {}).get("Metric", {})
                    if stat.get("Namespace") == "AWS/SQS":
                        stat["Dimensions"] = [{"Name": "QueueName", "Value": queue}]


# --- decisions ---------------------------------------------------------------------------------


def _covers(registered: Any, wanted: Any) -> bool:
    """True when everything ``wanted`` says, ``registered`` says too (defaults the API adds are ignored)."""
    if isinstance(wanted, dict):
        return isinstance(registered, dict) and all(
            k in registered and _covers(registered[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(registered, list)
            and len(registered) == len(wanted)
            and all(_covers(r, w) for r, w in zip(registered, wanted, strict=True))
        )
    return bool(registered == wanted)


def same_task_definition(registered: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    """Would registering ``wanted`` add nothing to the ``registered`` revision (``DescribeTaskDefinition``'s)?

    Every field of the request must be in the revision with the same value; fields the API filled in
    (``revision``, ``status``, ``essential`` defaults, ARNs…) do not make a difference. Tags are not part of a
    revision's content.
    """
    if registered is None or registered.get("status", "ACTIVE") != "ACTIVE":
        return False
    content = {k: v for k, v in wanted.items() if k != "tags"}
    return _covers(dict(registered), content)


@dataclass(frozen=True)
class ServicePlan:
    """What to call for one service: ``create`` (with the body), ``update`` (with the fields), or nothing."""

    action: str  # "create" | "update" | "none"
    body: dict[str, Any]


def plan_service(existing: Mapping[str, Any] | None, wanted: Mapping[str, Any], taskdef_arn: str) -> ServicePlan:
    """``CreateService`` for a missing (or INACTIVE) service, else ``UpdateService`` where it differs.

    An existing service keeps its desired count (the scaler or the user owns it once the service runs); its
    task definition and deployment configuration follow the description.
    """
    if existing is None or existing.get("status") == "INACTIVE":
        return ServicePlan("create", {**wanted, "taskDefinition": taskdef_arn})
    update: dict[str, Any] = {}
    if existing.get("taskDefinition") != taskdef_arn:
        update["taskDefinition"] = taskdef_arn
    if "deploymentConfiguration" in wanted and not _covers(
        existing.get("deploymentConfiguration") or {}, wanted["deploymentConfiguration"]
    ):
        update["deploymentConfiguration"] = wanted["deploymentConfiguration"]
    if not update:
        return ServicePlan("none", {})
    return ServicePlan("update", {"cluster": wanted["cluster"], "service": wanted["serviceName"], **update})


# --- the calls -----------------------------------------------------------------------------------


def _latest(ecs: Any, family: str) -> dict[str, Any] | None:
    try:
        return dict(ecs.describe_task_definition(taskDefinition=family)["taskDefinition"])
    except ecs.exceptions.ClientException:
        return None  # no ACTIVE revision of the family


def apply(
    ecs: Any, autoscaling: Any, description: Description, say: Callable[[str], None] = lambda line: None
) -> dict[str, str]:
    """Make the control plane match ``description``; the task definition ARN of each family."""
    cluster = description.cluster["clusterName"]
    ecs.create_cluster(**description.cluster)  # idempotent on AWS: an existing cluster is returned
    arns: dict[str, str] = {}
    for wanted in description.task_definitions:
        family = wanted["family"]
        latest = _latest(ecs, family)
        if latest is not None and same_task_definition(latest, wanted):
            arns[family] = latest["taskDefinitionArn"]
            say(f"task definition {family}:{latest['revision']} unchanged")
            continue
        registered = ecs.register_task_definition(**wanted)["taskDefinition"]
        arns[family] = registered["taskDefinitionArn"]
        say(f"registered {family}:{registered['revision']}")
    names = [s["serviceName"] for s in description.services]
    found = {s["serviceName"]: s for s in ecs.describe_services(cluster=cluster, services=names).get("services", [])}
    for wanted in description.services:
        name = wanted["serviceName"]
        plan = plan_service(found.get(name), wanted, arns[wanted["taskDefinition"].split(":")[0]])
        if plan.action == "create":
            ecs.create_service(**plan.body)
            say(f"created service {name} ({plan.body.get('desiredCount', 1)} tasks)")
        elif plan.action == "update":
            ecs.update_service(**plan.body)
            say(f"updated service {name}: {', '.join(k for k in plan.body if k not in ('cluster', 'service'))}")
    for scaling in description.scaling:
        target = scaling["RegisterScalableTarget"]
        autoscaling.register_scalable_target(**target)
        for policy in scaling.get("PutScalingPolicy", []):
            autoscaling.put_scaling_policy(**policy)
        say(f"scaling of {target['ResourceId']}: {target['MinCapacity']}..{target['MaxCapacity']} tasks")
    return arns


def apply_to(
    url: str,
    region: str,
    credentials: Mapping[str, str],
    description: Description,
    say: Callable[[str], None] = lambda line: None,
) -> dict[str, str]:
    """:func:`apply` with botocore's own ``ecs`` and ``application-autoscaling`` clients on the control plane at
    ``url`` (``credentials``: ``aws_access_key_id`` and ``aws_secret_access_key``). Blocking: run it in a thread."""
    session = botocore.session.get_session()
    config = botocore.config.Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"})
    kwargs: dict[str, Any] = {"region_name": region, "endpoint_url": url, "config": config, **credentials}
    ecs = session.create_client("ecs", **kwargs)
    autoscaling = session.create_client("application-autoscaling", **kwargs)
    try:
        return apply(ecs, autoscaling, description, say)
    finally:
        ecs.close()
        autoscaling.close()
