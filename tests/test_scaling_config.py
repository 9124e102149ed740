"""Application Auto Scaling bodies → the scaler's policy (services/orchestrator/scaling_config.py), table-driven."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from services.orchestrator.scaling import QueueMetrics, ScalingPolicy, decide
from services.orchestrator.scaling_config import ScalingConfigError, scaling_policy

TARGET = {
    "ServiceNamespace": "ecs",
    "ResourceId": "service/pixfleet/worker",
    "ScalableDimension": "ecs:service:DesiredCount",
    "MinCapacity": 1,
    "MaxCapacity": 4,
}


def sqs(metric_id: str, name: str, queue: str = "pixfleet-jobs") -> dict[str, Any]:
    metric = {"Namespace": "AWS/SQS", "MetricName": name, "Dimensions": [{"Name": "QueueName", "Value": queue}]}
    return {"Id": metric_id, "MetricStat": {"Metric": metric, "Stat": "Sum"}, "ReturnData": False}


TASKS = {
    "Id": "tasks",
    "ReturnData": False,
    "MetricStat": {
        "Stat": "Average",
        "Metric": {
            "Namespace": "ECS/ContainerInsights",
            "MetricName": "RunningTaskCount",
            "Dimensions": [{"Name": "ClusterName", "Value": "pixfleet"}, {"Name": "ServiceName", "Value": "worker"}],
        },
    },
}


def policy(
    expression: str = "(visible + in_flight) / tasks", metrics: list | None = None, **config: Any
) -> dict[str, Any]:
    metrics = (
        metrics
        if metrics is not None
        else [
            sqs("visible", "ApproximateNumberOfMessagesVisible"),
            sqs("in_flight", "ApproximateNumberOfMessagesNotVisible"),
            TASKS,
        ]
    )
    spec = {"Metrics": [*metrics, {"Id": "backlog", "Expression": expression, "ReturnData": True}]}
    return {
        "PolicyName": "backlog",
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": 10,
            "CustomizedMetricSpecification": spec,
            "ScaleOutCooldown": 0,
            "ScaleInCooldown": 30,
            **config,
        },
    }


def mutated(base: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


CONFIG = ("TargetTrackingScalingPolicyConfiguration",)
CASES = [
    # name, target, policy, expected (fields of ScalingPolicy) or error text
    (
        "the documented backlog per task",
        TARGET,
        policy(),
        {
            "min": 1,
            "max": 4,
            "target_backlog_per_task": 10,
            "count_in_flight": True,
            "count_visible": True,
            "scale_in_cooldown": 30,
        },
    ),
    (
        "visible only (AWS's own example)",
        TARGET,
        policy("visible / tasks"),
        {"count_in_flight": False, "count_visible": True},
    ),
    (
        "delayed counted too",
        TARGET,
        policy(
            "(visible + delayed) / tasks",
            [
                sqs("visible", "ApproximateNumberOfMessagesVisible"),
                sqs("delayed", "ApproximateNumberOfMessagesDelayed"),
                TASKS,
            ],
        ),
        {"count_delayed": True, "count_in_flight": False},
    ),
    ("scale-in disabled", TARGET, policy(DisableScaleIn=True), {"disable_scale_in": True}),
    ("no policy yet: min..max only", TARGET, None, {"min": 1, "max": 4, "count_in_flight": False}),
    ("wrong dimension", {**TARGET, "ScalableDimension": "ecs:service:Cpu"}, policy(), "ScalableDimension"),
    ("min above max", {**TARGET, "MinCapacity": 5}, policy(), "need 0 <= MinCapacity <= MaxCapacity"),
    ("step scaling", TARGET, {**policy(), "PolicyType": "StepScaling"}, "TargetTrackingScaling"),
    (
        "predefined metric",
        TARGET,
        mutated(
            policy(),
            CONFIG,
            {
                "TargetValue": 50,
                "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
            },
        ),
        "PredefinedMetricSpecification is not supported",
    ),
    (
        "another queue",
        TARGET,
        policy("visible / tasks", [sqs("visible", "ApproximateNumberOfMessagesVisible", "other"), TASKS]),
        "queue 'other' is not one this control plane watches",
    ),
    ("not divided by tasks", TARGET, policy("visible + in_flight"), "pixfleet evaluates (m1 [+ m2 …]) / tasks"),
    ("divided by a queue metric", TARGET, policy("visible / in_flight"), "divisor must be the RunningTaskCount"),
    (
        "a CPU metric",
        TARGET,
        policy(
            "cpu / tasks",
            [
                {
                    "Id": "cpu",
                    "MetricStat": {
                        "Metric": {"Namespace": "AWS/ECS", "MetricName": "CPUUtilization"},
                        "Stat": "Average",
                    },
                    "ReturnData": False,
                },
                TASKS,
            ],
        ),
        "cannot evaluate AWS/ECS CPUUtilization",
    ),
    ("zero target", TARGET, mutated(policy(), (*CONFIG, "TargetValue"), 0), "TargetValue must be a positive"),
]


@pytest.mark.parametrize(("name", "target", "body", "expected"), CASES, ids=[c[0] for c in CASES])
def test_scaling_policy(name: str, target: dict, body: dict | None, expected: dict | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(
            ScalingConfigError,
            match=expected.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("+", r"\+"),
        ):
            scaling_policy(target, body, queue_names={"pixfleet-jobs"}, cluster="pixfleet", service="worker")
        return
    got = scaling_policy(target, body, queue_names={"pixfleet-jobs"}, cluster="pixfleet", service="worker")
    assert isinstance(got, ScalingPolicy)
    for field, value in expected.items():
        assert getattr(got, field) == value, field


def test_disable_scale_in_holds_the_count() -> None:
    held = scaling_policy(
        TARGET,
        policy(DisableScaleIn=True, ScaleInCooldown=0),
        queue_names={"pixfleet-jobs"},
        cluster="pixfleet",
        service="worker",
    )
    decision = decide(held, 4, QueueMetrics(visible=0), now=100.0)
    assert (decision.action, decision.desired) == ("hold", 4) and "scale-in is disabled" in decision.reason


def test_visible_only_ignores_in_flight() -> None:
    visible_only = scaling_policy(
        TARGET, policy("visible / tasks"), queue_names={"pixfleet-jobs"}, cluster="pixfleet", service="worker"
    )
    assert decide(visible_only, 1, QueueMetrics(visible=5, in_flight=100), now=0.0).desired == 1
    both = scaling_policy(TARGET, policy(), queue_names={"pixfleet-jobs"}, cluster="pixfleet", service="worker")
    assert decide(both, 1, QueueMetrics(visible=5, in_flight=100), now=0.0).desired == 4
