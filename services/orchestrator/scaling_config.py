"""Application Auto Scaling's shapes → the scaler's :class:`~services.orchestrator.scaling.ScalingPolicy`.

A worker service scales as AWS documents for SQS queue workers: a scalable target
(``RegisterScalableTarget``: ``ecs:service:DesiredCount``, ``MinCapacity``, ``MaxCapacity``) and a
``TargetTrackingScaling`` policy (``PutScalingPolicy``) whose ``CustomizedMetricSpecification`` is metric
math for the **backlog per task**::

    visible  = AWS/SQS ApproximateNumberOfMessagesVisible  (QueueName = the job queue)
    in_flight = AWS/SQS ApproximateNumberOfMessagesNotVisible   (optional: pixfleet counts them by default)
    tasks    = ECS/ContainerInsights RunningTaskCount (ClusterName, ServiceName)
    expression: (visible + in_flight) / tasks,  TargetValue = messages per task

pixfleet evaluates exactly this family of expressions locally (twice a second, from the queue's own
attributes, not CloudWatch): a sum of SQS queue metrics of the job queue, divided by the service's running
task count. :func:`scaling_policy` turns the two request bodies into the pure scaler's policy, or raises
:class:`ScalingConfigError` saying what pixfleet cannot evaluate — the same bodies go unchanged to AWS
(``pixfleet deploy render``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from services.orchestrator.scaling import ScalingPolicy

DIMENSION = "ecs:service:DesiredCount"
SQS_METRICS = {
    "ApproximateNumberOfMessagesVisible": "visible",
    "ApproximateNumberOfMessagesNotVisible": "in_flight",
    "ApproximateNumberOfMessagesDelayed": "delayed",
}
TASK_COUNT_METRICS = {("ECS/ContainerInsights", "RunningTaskCount")}
_SUM_OVER = re.compile(r"^\(?\s*([a-z][A-Za-z0-9_]*(?:\s*\+\s*[a-z][A-Za-z0-9_]*)*)\s*\)?\s*/\s*([a-z][A-Za-z0-9_]*)$")


class ScalingConfigError(ValueError):
    """A scalable target or policy pixfleet cannot evaluate; the message says why and what it can."""


def resource_id(cluster: str, service: str) -> str:
    return f"service/{cluster}/{service}"


def parse_resource_id(value: str) -> tuple[str, str]:
    parts = value.split("/")
    if len(parts) != 3 or parts[0] != "service" or not all(parts):
        raise ScalingConfigError(f"ResourceId {value!r}: expected service/CLUSTER/SERVICE")
    return parts[1], parts[2]


def _dimensions(metric: Mapping[str, Any]) -> dict[str, str]:
    return {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}


def scaling_policy(
    target: Mapping[str, Any],
    policy: Mapping[str, Any] | None,
    *,
    queue_names: set[str],
    cluster: str,
    service: str,
) -> ScalingPolicy:
    """The scaler's policy for a scalable target and its target-tracking policy (``None``: min/max only)."""
    if target.get("ScalableDimension") != DIMENSION:
        raise ScalingConfigError(f"ScalableDimension must be {DIMENSION}")
    low, high = target.get("MinCapacity"), target.get("MaxCapacity")
    if low is None or high is None:
        raise ScalingConfigError("a scalable target needs MinCapacity and MaxCapacity")
    if not 0 <= low <= high:
        raise ScalingConfigError(f"MinCapacity {low} and MaxCapacity {high}: need 0 <= MinCapacity <= MaxCapacity")
    if policy is None:
        # No policy (yet, or deleted): the count is kept within min..max and otherwise holds: the backlog counts
        # nothing, so demand is MinCapacity, and scale-in is off.
        return ScalingPolicy(
            min=low,
            max=max(high, 1),
            target_backlog_per_task=1e12,
            count_visible=False,
            count_in_flight=False,
            disable_scale_in=True,
        )
    if policy.get("PolicyType", "StepScaling") != "TargetTrackingScaling":
        raise ScalingConfigError("pixfleet evaluates TargetTrackingScaling policies only")
    config = policy.get("TargetTrackingScalingPolicyConfiguration") or {}
    spec = config.get("CustomizedMetricSpecification")
    if spec is None:
        raise ScalingConfigError(
            "pixfleet evaluates a CustomizedMetricSpecification of SQS backlog per task "
            "((visible [+ in_flight]) / RunningTaskCount); PredefinedMetricSpecification is not supported"
        )
    counted = _backlog_metrics(spec, queue_names, cluster, service)
    value = config.get("TargetValue")
    if not isinstance(value, (int, float)) or value <= 0:
        raise ScalingConfigError("TargetValue must be a positive number of messages per task")
    return ScalingPolicy(
        min=low,
        max=max(high, 1),
        target_backlog_per_task=float(value),
        scale_out_cooldown=float(config.get("ScaleOutCooldown", 300)),
        scale_in_cooldown=float(config.get("ScaleInCooldown", 300)),
        count_in_flight="in_flight" in counted,
        count_delayed="delayed" in counted,
        count_visible="visible" in counted,
        disable_scale_in=bool(config.get("DisableScaleIn", False)),
    )


def _backlog_metrics(spec: Mapping[str, Any], queue_names: set[str], cluster: str, service: str) -> set[str]:
    """Which queue counts the metric math adds up (``visible``, ``in_flight``, ``delayed``), after checking its form."""
    metrics = spec.get("Metrics")
    if not metrics:
        single = {k: spec[k] for k in ("Namespace", "MetricName", "Dimensions") if k in spec}
        raise ScalingConfigError(
            f"a single metric ({single.get('MetricName')}) is not backlog per task: give Metrics with an expression "
            "(visible [+ in_flight]) / RunningTaskCount"
        )
    by_id: dict[str, str] = {}
    expressions = []
    for item in metrics:
        if "Expression" in item:
            if item.get("ReturnData", True):
                expressions.append(item["Expression"])
            continue
        metric = item.get("MetricStat", {}).get("Metric", {})
        namespace, name, dims = metric.get("Namespace"), metric.get("MetricName"), _dimensions(metric)
        if namespace == "AWS/SQS" and name in SQS_METRICS:
            queue = dims.get("QueueName")
            if queue not in queue_names:
                watched = ", ".join(sorted(queue_names))
                raise ScalingConfigError(
                    f"metric {item['Id']}: queue {queue!r} is not one this control plane watches ({watched})"
                )
            by_id[item["Id"]] = SQS_METRICS[name]
        elif (namespace, name) in TASK_COUNT_METRICS:
            if dims.get("ClusterName", cluster) != cluster or dims.get("ServiceName", service) != service:
                raise ScalingConfigError(
                    f"metric {item['Id']}: RunningTaskCount must be of service {cluster}/{service}"
                )
            by_id[item["Id"]] = "tasks"
        else:
            raise ScalingConfigError(f"metric {item['Id']}: pixfleet cannot evaluate {namespace} {name}")
    if len(expressions) != 1:
        raise ScalingConfigError("exactly one metric must return data: the expression (visible [+ in_flight]) / tasks")
    match = _SUM_OVER.match(expressions[0].strip())
    if match is None:
        raise ScalingConfigError(f"expression {expressions[0]!r}: pixfleet evaluates (m1 [+ m2 …]) / tasks")
    terms = [t.strip() for t in match.group(1).split("+")]
    if by_id.get(match.group(2)) != "tasks":
        raise ScalingConfigError(f"expression {expressions[0]!r}: the divisor must be the RunningTaskCount metric")
    counted = set()
    for term in terms:
        kind = by_id.get(term)
        if kind in (None, "tasks"):
            raise ScalingConfigError(
                f"expression {expressions[0]!r}: {term!r} is not an SQS queue metric of the job queue"
            )
        counted.add(kind)
    return counted


def describe_policy(policy: ScalingPolicy) -> str:
    """One line for events and ``pixfleet status``: what the scaler tracks."""
    counted = [
        name
        for name, on in (
            ("visible", policy.count_visible),
            ("in flight", policy.count_in_flight),
            ("delayed", policy.count_delayed),
        )
        if on
    ]
    tracked = " + ".join(counted) or "nothing"
    return f"{tracked} per task at {policy.target_backlog_per_task:g}, {policy.min}..{policy.max} tasks"
