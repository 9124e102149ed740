"""The decisions of ``pixfleet up``'s apply step: when to register a revision, create or update a service."""

from __future__ import annotations

from typing import Any

import pytest

from infra.ecs_apply import Description, plan_service, same_task_definition

WANTED = {
    "family": "pixfleet-worker",
    "cpu": "512",
    "containerDefinitions": [{"name": "worker", "image": "w:1", "environment": [{"name": "A", "value": "1"}]}],
    "tags": [{"key": "app", "value": "pixfleet"}],
}
REGISTERED = {
    "taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/pixfleet-worker:3",
    "family": "pixfleet-worker",
    "revision": 3,
    "status": "ACTIVE",
    "cpu": "512",
    "containerDefinitions": [
        {"name": "worker", "image": "w:1", "essential": True, "environment": [{"name": "A", "value": "1"}]}
    ],
}


def _with(doc: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**doc, **changes}


@pytest.mark.parametrize(
    ("registered", "wanted", "same"),
    [
        (REGISTERED, WANTED, True),  # API defaults (essential, revision, ARN) and tags make no difference
        (None, WANTED, False),  # no revision yet
        (_with(REGISTERED, status="INACTIVE"), WANTED, False),  # deregistered: register again
        (_with(REGISTERED, cpu="1024"), WANTED, False),
        (REGISTERED, _with(WANTED, memory="1024"), False),  # a field the revision lacks
        (
            REGISTERED,
            _with(WANTED, containerDefinitions=[{"name": "worker", "image": "w:2", "environment": []}]),
            False,
        ),
        (
            REGISTERED,
            _with(
                WANTED,
                containerDefinitions=[
                    {"name": "worker", "image": "w:1", "environment": [{"name": "A", "value": "1"}]},
                    {"name": "sidecar", "image": "s:1"},
                ],
            ),
            False,  # a list of another length
        ),
    ],
)
def test_same_task_definition(registered: dict[str, Any] | None, wanted: dict[str, Any], same: bool) -> None:
    assert same_task_definition(registered, wanted) is same


SERVICE = {
    "cluster": "pixfleet",
    "serviceName": "worker",
    "taskDefinition": "pixfleet-worker",
    "desiredCount": 1,
    "deploymentConfiguration": {"minimumHealthyPercent": 50, "maximumPercent": 200},
}
ARN3 = "arn:aws:ecs:us-east-1:123456789012:task-definition/pixfleet-worker:3"
ARN4 = ARN3[:-1] + "4"
RUNNING = {
    "serviceName": "worker",
    "status": "ACTIVE",
    "taskDefinition": ARN3,
    "desiredCount": 3,
    "deploymentConfiguration": {"minimumHealthyPercent": 50, "maximumPercent": 200, "deploymentCircuitBreaker": {}},
}


@pytest.mark.parametrize(
    ("existing", "arn", "action", "body"),
    [
        (None, ARN3, "create", {**SERVICE, "taskDefinition": ARN3}),
        (_with(RUNNING, status="INACTIVE"), ARN3, "create", {**SERVICE, "taskDefinition": ARN3}),
        (RUNNING, ARN3, "none", {}),  # the desired count (3, the scaler's) is left alone
        (RUNNING, ARN4, "update", {"cluster": "pixfleet", "service": "worker", "taskDefinition": ARN4}),
        (
            _with(RUNNING, deploymentConfiguration={"minimumHealthyPercent": 100, "maximumPercent": 200}),
            ARN3,
            "update",
            {"cluster": "pixfleet", "service": "worker", "deploymentConfiguration": SERVICE["deploymentConfiguration"]},
        ),
    ],
)
def test_plan_service(existing: dict[str, Any] | None, arn: str, action: str, body: dict[str, Any]) -> None:
    plan = plan_service(existing, SERVICE, arn)
    assert (plan.action, plan.body) == (action, body)


def test_the_shipped_description_loads_and_refers_to_its_own_families() -> None:
    description = Description.load(overrides={"worker": {"desiredCount": 2}})
    families = {t["family"] for t in description.task_definitions}
    assert {s["taskDefinition"] for s in description.services} <= families
    assert {s["serviceName"]: s["desiredCount"] for s in description.services}["worker"] == 2
    assert description.cluster["clusterName"] == "pixfleet"
    assert all(s["RegisterScalableTarget"]["ResourceId"].startswith("service/pixfleet/") for s in description.scaling)
