"""Application Auto Scaling on the control plane (services/orchestrator/awsapi/autoscaling.py): boto3's
``application-autoscaling`` client and the AWS CLI against a live embedded stack, answers checked against
botocore's model (``PIXFLEET_ORCH_VALIDATE_RESPONSES``), and table tests of the pure parts."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import botocore.config
import botocore.exceptions
import pytest

import images
from infra import INFRA_DIR
from infra.stack import StackSpec
from pixfleet.stack import EmbeddedConfig, EmbeddedStack
from services.orchestrator.awsapi.autoscaling import suspended
from services.orchestrator.awsapi.scaling_activities import ActivityLog, clamp_message
from services.orchestrator.awsapi.endpoint import admin_signer
from services.orchestrator.scaling import Decision, QueueMetrics, ScalingPolicy, ScalingState, decide
from stack_fixtures import StackClient, queue_drained

WORKER = "service/pixfleet/worker"
ECS = {"ServiceNamespace": "ecs", "ScalableDimension": "ecs:service:DesiredCount"}
SCALING = json.loads((INFRA_DIR / "ecs" / "scaling" / "worker.json").read_text())


# --- pure parts -----------------------------------------------------------------------------------

POLICY = ScalingPolicy(min=1, max=3, target_backlog_per_task=10)


@pytest.mark.parametrize(
    ("name", "decision", "says"),
    [
        ("clamped by max", Decision(3, "scale_out", "", ScalingState(), backlog=95), "maximum capacity of 3 tasks"),
        ("demand fits", Decision(2, "scale_out", "", ScalingState(), backlog=15), None),
        ("exactly max", Decision(3, "scale_out", "", ScalingState(), backlog=30), None),
        ("floor", Decision(1, "scale_in", "", ScalingState(), backlog=0), "minimum capacity of 1 tasks"),
        ("no metrics", Decision(2, "hold", "", ScalingState()), None),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_clamp_message(name: str, decision: Decision, says: str | None) -> None:
    got = clamp_message(POLICY, decision)
    assert got is None if says is None else (got is not None and says in got), got


@pytest.mark.parametrize(
    ("state", "scale_in_off", "scale_out_off"),
    [
        ({}, False, False),
        ({"DynamicScalingInSuspended": True}, True, False),
        ({"DynamicScalingOutSuspended": True}, False, True),
        ({"DynamicScalingInSuspended": True, "DynamicScalingOutSuspended": True}, True, True),
        ({"ScheduledScalingSuspended": True}, False, False),
    ],
)
def test_suspended_state(state: dict[str, bool], scale_in_off: bool, scale_out_off: bool) -> None:
    got = suspended(POLICY, state)
    assert (got.disable_scale_in, got.disable_scale_out) == (scale_in_off, scale_out_off)


@pytest.mark.parametrize(
    ("current", "visible", "action", "desired"),
    [(1, 50, "hold", 1), (3, 0, "scale_in", 1)],
    ids=["no scale-out", "scale-in still works"],
)
def test_scale_out_suspended_in_the_scaler(current: int, visible: int, action: str, desired: int) -> None:
    policy = ScalingPolicy(min=1, max=4, scale_in_cooldown=0, disable_scale_out=True)
    decision = decide(policy, current, QueueMetrics(visible=visible), now=10.0, state=ScalingState(lower_since=0.0))
    assert (decision.action, decision.desired) == (action, desired), decision.reason


def test_activity_log_updates_in_place_keeps_the_newest_and_survives_restarts(tmp_path: Path) -> None:
    path = tmp_path / "scaling-activities.jsonl"
    log = ActivityLog(path, keep=3)
    for i in range(10):
        log.put({"ActivityId": f"a{i}", "ResourceId": WORKER, "StatusCode": "InProgress"})
    log.put({"ActivityId": "a9", "ResourceId": WORKER, "StatusCode": "Successful"})
    assert [a["ActivityId"] for a in log.newest_first()] == ["a9", "a8", "a7"]
    assert [a["ActivityId"] for a in log.in_progress(WORKER)] == ["a8", "a7"]
    again = ActivityLog(path, keep=3)
    assert [(a["ActivityId"], a["StatusCode"]) for a in again.newest_first()] == [
        ("a9", "Successful"),
        ("a8", "InProgress"),
        ("a7", "InProgress"),
    ]
    assert len(path.read_text().splitlines()) <= 2 * 3 + 1  # rewritten from memory, not growing without bound
    assert again.newest_first("service/pixfleet/other") == []


# --- against a live stack -----------------------------------------------------------------------

live = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[StackClient]:
    """One worker at first; the tests give it its scaling through the API."""
    config = EmbeddedConfig(
        state_dir=tmp_path_factory.mktemp("aas"),
        workers=1,
        max_workers=4,
        api_port=0,
        spec=StackSpec(visibility_timeout=10),
        autoscaling=False,  # the tests register the worker's scalable target and policy themselves
        orchestrator_env={"PIXFLEET_ORCH_VALIDATE_RESPONSES": "1"},
    )
    async with EmbeddedStack(config) as stack, aiohttp.ClientSession() as http:
        yield StackClient(stack, http)


def admin_key(stack: EmbeddedStack) -> str:
    """The control plane's admin access key id (derived from the admin token, which is its secret)."""
    return admin_signer(stack.admin_token, "000000000000").access_key_id


def aas(stack: EmbeddedStack, secret: str | None = None) -> Any:
    return boto3.client(
        "application-autoscaling",
        region_name=stack.aws.region,
        endpoint_url=stack.orchestrator_url,
        aws_access_key_id=admin_key(stack),
        aws_secret_access_key=secret or stack.admin_token,
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )


def cli(stack: EmbeddedStack, *args: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": admin_key(stack),
        "AWS_SECRET_ACCESS_KEY": stack.admin_token,
        "AWS_DEFAULT_REGION": stack.aws.region,
        "AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING": stack.orchestrator_url,
    }
    env.pop("AWS_PROFILE", None)
    out = subprocess.run(
        [sys.executable, "-m", "awscli", "application-autoscaling", *args, "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip() else {}


def policy_body(**config: Any) -> dict[str, Any]:
    """worker.json's PutScalingPolicy, with some of its TargetTrackingScalingPolicyConfiguration changed."""
    body = copy.deepcopy(SCALING["PutScalingPolicy"][0])
    body["TargetTrackingScalingPolicyConfiguration"].update(config)
    return body


async def until(predicate: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached after {timeout}s")
        await asyncio.sleep(0.2)


async def worker(stack: EmbeddedStack) -> dict[str, Any]:
    return (await stack.services())["worker"]


async def ticks_pass(stack: EmbeddedStack, seconds: float) -> None:
    """Until the control loop has ticked for ``seconds`` more (its own clock, read from /healthz)."""
    first = (await stack.control.health())["last_tick"]

    async def later() -> bool:
        return (await stack.control.health())["last_tick"] >= first + seconds

    await until(later, 30, f"{seconds}s of control-loop ticks")


def error_of(call: Callable[[], Any]) -> tuple[str, str]:
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        call()
    return refused.value.response["Error"]["Code"], refused.value.response["Error"]["Message"]


@live
async def test_refusals_in_aws_words(fleet: StackClient) -> None:
    client = aas(fleet.stack)
    code, message = error_of(
        lambda: client.register_scalable_target(**ECS, ResourceId="service/pixfleet/nope", MinCapacity=1, MaxCapacity=2)
    )
    assert (code, message) == ("ValidationException", "ECS service doesn't exist: service/pixfleet/nope")
    code, message = error_of(
        lambda: client.register_scalable_target(**ECS, ResourceId="service/other/worker", MinCapacity=1, MaxCapacity=2)
    )
    assert code == "ValidationException" and "doesn't exist" in message
    code, message = error_of(
        lambda: client.register_scalable_target(**ECS, ResourceId=WORKER, MinCapacity=3, MaxCapacity=2)
    )
    assert code == "ValidationException" and "cannot be greater than maximum" in message
    code, message = error_of(
        lambda: client.put_scaling_policy(**{**policy_body(), "ResourceId": "service/pixfleet/api"})
    )
    assert code == "ObjectNotFoundException" and "No scalable target registered" in message
    code, message = error_of(lambda: client.delete_scaling_policy(**ECS, ResourceId=WORKER, PolicyName="never-put"))
    assert code == "ObjectNotFoundException" and "never-put" in message
    code, _ = error_of(lambda: client.deregister_scalable_target(**ECS, ResourceId="service/pixfleet/api"))
    assert code == "ObjectNotFoundException"
    code, message = error_of(
        lambda: client.register_scalable_target(
            ServiceNamespace="ecs",
            ScalableDimension="ecs:service:Bogus",
            ResourceId=WORKER,
            MinCapacity=1,
            MaxCapacity=2,
        )
    )
    assert code == "ValidationException" and "ecs:service:DesiredCount" in message

    # Nothing the scaler cannot evaluate is accepted (with a target registered, so only the policy is wrong).
    client.register_scalable_target(**ECS, ResourceId=WORKER, MinCapacity=1, MaxCapacity=4)
    api = policy_body()
    foreign = copy.deepcopy(api)
    metric = foreign["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]["Metrics"][0]
    metric["MetricStat"]["Metric"]["Dimensions"][0]["Value"] = "someone-elses-queue"
    code, message = error_of(lambda: client.put_scaling_policy(**foreign))
    assert code == "ValidationException" and "'someone-elses-queue' is not one this control plane watches" in message
    squared = copy.deepcopy(api)
    squared["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]["Metrics"][-1][
        "Expression"
    ] = "visible * visible / tasks"
    code, message = error_of(lambda: client.put_scaling_policy(**squared))
    assert code == "ValidationException" and "pixfleet evaluates (m1 [+ m2 …]) / tasks" in message
    step = {
        **{k: api[k] for k in ("PolicyName", "ServiceNamespace", "ResourceId", "ScalableDimension")},
        "PolicyType": "StepScaling",
        "StepScalingPolicyConfiguration": {"AdjustmentType": "ChangeInCapacity", "StepAdjustments": []},
    }
    code, message = error_of(lambda: client.put_scaling_policy(**step))
    assert code == "ValidationException" and "TargetTrackingScaling" in message
    assert client.describe_scaling_policies(ServiceNamespace="ecs")["ScalingPolicies"] == []  # none was kept
    client.deregister_scalable_target(**ECS, ResourceId=WORKER)

    # Field paths from botocore's model, for a body botocore itself would not send.
    bad = {**ECS, "ResourceId": WORKER, "MinCapacity": "one", "Bogus": 1}
    answer = raw(fleet.stack, "RegisterScalableTarget", bad)
    assert answer["status"] == 400 and answer["body"]["__type"] == "ValidationException", answer
    assert (
        "MinCapacity" in answer["body"]["message"]
        and 'Unknown parameter in input: "Bogus"' in answer["body"]["message"]
    )

    code, _ = error_of(
        lambda: aas(fleet.stack, secret="not-the-admin-token").describe_scalable_targets(ServiceNamespace="ecs")
    )
    assert code == "InvalidSignatureException"


def raw(stack: EmbeddedStack, action: str, params: dict[str, Any]) -> dict[str, Any]:
    """A signed request with a body botocore would refuse to build."""
    import urllib.error
    import urllib.request

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(
        method="POST",
        url=stack.orchestrator_url + "/",
        data=json.dumps(params).encode(),
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"AnyScaleFrontendService.{action}"},
    )
    SigV4Auth(Credentials(admin_key(stack), stack.admin_token), "application-autoscaling", stack.aws.region).add_auth(
        request
    )
    prepared = request.prepare()
    http = urllib.request.Request(prepared.url, data=prepared.body, headers=dict(prepared.headers), method="POST")
    try:
        with urllib.request.urlopen(http) as r:
            return {"status": r.status, "body": json.load(r)}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": json.load(exc)}


async def burst(fleet: StackClient, count: int) -> list[str]:
    small = images.photo_jpeg(320, 240)
    sem = asyncio.Semaphore(16)

    async def send(i: int) -> str:
        async with sem:
            status, body = await fleet.upload(small, preset="thumbs", filename=f"{i}.jpg")
            assert status == 202, body
            return body["job_id"]

    return await asyncio.gather(*(send(i) for i in range(count)))


@live
async def test_register_put_with_the_cli_burst_scale_out_hold_delete_deregister(
    fleet: StackClient, tmp_path: Path
) -> None:
    stack = fleet.stack
    client = aas(stack)
    arn = client.register_scalable_target(**ECS, ResourceId=WORKER, MinCapacity=1, MaxCapacity=3)["ScalableTargetARN"]
    (target,) = client.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[WORKER])["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"], target["ScalableTargetARN"]) == (1, 3, arn)
    assert client.register_scalable_target(**ECS, ResourceId=WORKER, MaxCapacity=3)["ScalableTargetARN"] == arn

    # The policy of infra/ecs/scaling/worker.json, put with the AWS CLI as on AWS.
    body = tmp_path / "policy.json"
    body.write_text(json.dumps(policy_body()))
    put = cli(stack, "put-scaling-policy", "--cli-input-json", f"file://{body}")
    assert put["PolicyARN"].endswith(":policyName/sqs-backlog-per-task")
    assert ["AlarmHigh" in a["AlarmName"] for a in put["Alarms"]] == [True, False]  # high, then low
    trail = (stack.state_dir / "orchestrator" / "audit.jsonl").read_text().splitlines()
    recorded = [json.loads(line) for line in trail if '"PutScalingPolicy"' in line][-1]
    assert recorded["eventSource"] == "application-autoscaling.amazonaws.com" and "errorCode" not in recorded
    assert recorded["userIdentity"]["accessKeyId"] == admin_key(stack) and "aws-cli" in recorded["userAgent"]
    (described,) = client.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=WORKER)["ScalingPolicies"]
    assert described["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 10
    scaling = (await worker(stack))["autoScaling"]
    assert (scaling["min"], scaling["max"]) == (1, 3)

    # A burst: the scaler scales out to MaxCapacity, and the activities say why.
    jobs = await burst(fleet, 150)

    async def at_max() -> bool:
        w = await worker(stack)
        return w["desiredCount"] == 3 and w["runningCount"] == 3

    await until(at_max, 60, "3 running workers")
    activities = cli(stack, "describe-scaling-activities", "--service-namespace", "ecs", "--resource-id", WORKER)[
        "ScalingActivities"
    ]
    newest = activities[0]
    assert newest["Description"] == "Setting desired count to 3." and newest["ResourceId"] == WORKER
    assert "triggered policy sqs-backlog-per-task" in newest["Cause"] and "backlog" in newest["Cause"]

    # The ceiling shows: on the clamped scale-out itself, or (when demand grew step by step) as the
    # not-scaled AlreadyAtMaxCapacity activity of the next tick that asks for more.
    async def ceiling_shown() -> bool:
        found = cli(
            stack,
            "describe-scaling-activities",
            "--service-namespace",
            "ecs",
            "--resource-id",
            WORKER,
            "--include-not-scaled-activities",
        )["ScalingActivities"]
        return any("maximum capacity of 3" in a.get("StatusMessage", "") for a in found)

    await until(ceiling_shown, 30, "an activity naming the maximum capacity")

    async def settled() -> dict[str, Any] | None:
        found = client.describe_scaling_activities(ServiceNamespace="ecs", ResourceId=WORKER)["ScalingActivities"]
        return found[0] if found[0]["StatusCode"] == "Successful" else None

    done = await until(settled, 60, "the scale-out activity to succeed")
    assert done["EndTime"] >= done["StartTime"]
    assert done["StatusMessage"].startswith("Successfully set desired count to 3.")

    async def ceiling() -> dict[str, Any] | None:
        found = client.describe_scaling_activities(
            ServiceNamespace="ecs", ResourceId=WORKER, IncludeNotScaledActivities=True
        )["ScalingActivities"]
        return next((a for a in found if a.get("NotScaledReasons")), None)

    held = await until(ceiling, 60, "a not-scaled activity at MaxCapacity")
    assert held["NotScaledReasons"] == [{"Code": "AlreadyAtMaxCapacity", "MaxCapacity": 3, "CurrentCapacity": 3}]
    assert held["StatusCode"] == "Failed" and "maximum capacity of 3" in held["StatusMessage"]

    # DisableScaleIn: once the queue is empty, the scaler wants fewer tasks and holds 3.
    client.put_scaling_policy(**policy_body(DisableScaleIn=True, ScaleInCooldown=1))
    for job_id in jobs:
        assert (await fleet.wait(job_id, timeout=180))["status"] == "succeeded"
    await queue_drained(fleet)

    await ticks_pass(stack, 4)  # past the 1 s cooldown: without DisableScaleIn it would scale in by now
    assert (await worker(stack))["desiredCount"] == 3

    # DeleteScalingPolicy: nothing drives the count any more; it holds (ticks pass, no scale-in).
    before = len(client.describe_scaling_activities(ServiceNamespace="ecs", ResourceId=WORKER)["ScalingActivities"])
    client.delete_scaling_policy(**ECS, ResourceId=WORKER, PolicyName="sqs-backlog-per-task")
    assert client.describe_scaling_policies(ServiceNamespace="ecs")["ScalingPolicies"] == []
    await ticks_pass(stack, 3)
    assert (await worker(stack))["desiredCount"] == 3
    after = client.describe_scaling_activities(ServiceNamespace="ecs", ResourceId=WORKER)["ScalingActivities"]
    assert len(after) == before

    # A policy that scales in again (short cooldown), then a lower MaxCapacity clamps at once.
    client.put_scaling_policy(**policy_body(ScaleInCooldown=1))

    async def scaled_in() -> bool:
        return (await worker(stack))["desiredCount"] == 1

    await until(scaled_in, 60, "scale in to 1")
    newest = client.describe_scaling_activities(ServiceNamespace="ecs", ResourceId=WORKER)["ScalingActivities"][0]
    assert newest["Description"] == "Setting desired count to 1." and "AlarmLow" in newest["Cause"]

    # Paging over the activities, newest first.
    pages = list(
        client.get_paginator("describe_scaling_activities").paginate(
            ServiceNamespace="ecs", ResourceId=WORKER, PaginationConfig={"PageSize": 1}
        )
    )
    paged = [a["ActivityId"] for p in pages for a in p["ScalingActivities"]]
    whole = [a["ActivityId"] for a in client.describe_scaling_activities(ServiceNamespace="ecs")["ScalingActivities"]]
    assert paged == whole and len(pages) == len(whole) >= 2

    # DeregisterScalableTarget: the scaler is off, the service keeps its count and takes any count.
    client.deregister_scalable_target(**ECS, ResourceId=WORKER)
    assert client.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"] == []
    assert client.describe_scaling_policies(ServiceNamespace="ecs")["ScalingPolicies"] == []  # went with it
    w = await worker(stack)
    assert w["autoScaling"] is None and w["desiredCount"] == 1
    await stack.control.update_service("worker", desired_count=2)
    await ticks_pass(stack, 2)
    assert (await worker(stack))["desiredCount"] == 2
    await stack.control.update_service("worker", desired_count=1)


@live
async def test_targets_policies_and_activities_survive_a_restart(fleet: StackClient) -> None:
    stack = fleet.stack
    client = aas(stack)
    for name in ("api", "deadletter", "worker"):
        client.register_scalable_target(**ECS, ResourceId=f"service/pixfleet/{name}", MinCapacity=1, MaxCapacity=2)
    client.put_scaling_policy(**policy_body(TargetValue=25))
    pages = list(
        client.get_paginator("describe_scalable_targets").paginate(
            ServiceNamespace="ecs", PaginationConfig={"PageSize": 1}
        )
    )
    assert len(pages) == 3 and [p["ScalableTargets"][0]["ResourceId"] for p in pages] == sorted(
        f"service/pixfleet/{n}" for n in ("api", "deadletter", "worker")
    )
    activities = client.describe_scaling_activities(ServiceNamespace="ecs")["ScalingActivities"]

    await stack.stop_orchestrator()
    await stack.start_orchestrator()
    await stack.wait_steady()

    client = aas(stack)
    assert len(client.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]) == 3
    (policy,) = client.describe_scaling_policies(ServiceNamespace="ecs", PolicyNames=["sqs-backlog-per-task"])[
        "ScalingPolicies"
    ]
    assert policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 25
    scaling = (await worker(stack))["autoScaling"]
    assert scaling["max"] == 2
    kept = client.describe_scaling_activities(ServiceNamespace="ecs")["ScalingActivities"]
    assert [a["ActivityId"] for a in kept][-len(activities) :] == [a["ActivityId"] for a in activities]
