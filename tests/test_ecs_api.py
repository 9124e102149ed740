"""The ECS API of the control plane against real clients: boto3's ``ecs`` client and the AWS CLI, on a live
embedded stack (moto server, the orchestrator process with the process runtime). Answers are validated
against botocore's model by the orchestrator itself (``PIXFLEET_ORCH_VALIDATE_RESPONSES``): an answer that
breaks the model is a 500, which these tests would see."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import boto3
import botocore.exceptions
import pytest

from pixfleet.stack import EmbeddedConfig, EmbeddedStack
from services.orchestrator.awsapi.endpoint import admin_signer
from stack_fixtures import StackClient

pytestmark = pytest.mark.asyncio(loop_scope="session")

ACCOUNT = "123456789012"  # moto's
SLEEP = ["python", "-c", "import time; time.sleep(600)"]


@pytest.fixture(scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[StackClient]:
    config = EmbeddedConfig(
        state_dir=tmp_path_factory.mktemp("ecs-api"),
        workers=1,
        max_workers=2,
        api_port=0,
        orchestrator_env={"PIXFLEET_ORCH_VALIDATE_RESPONSES": "true"},
    )
    async with EmbeddedStack(config) as stack, aiohttp.ClientSession() as http:
        yield StackClient(stack, http)


def ecs_client(stack: EmbeddedStack, key: str | None = None, secret: str | None = None) -> Any:
    signer = admin_signer(stack.admin_token, ACCOUNT)
    return boto3.client(
        "ecs",
        region_name="us-east-1",
        endpoint_url=stack.orchestrator_url,
        aws_access_key_id=key or signer.access_key_id,
        aws_secret_access_key=secret or signer.secret_access_key,
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )


async def call(fn: Callable[..., Any], /, **kw: Any) -> Any:
    """A boto3 call off the event loop (the stack's credentials endpoint runs on this loop)."""
    return await asyncio.to_thread(fn, **kw)


async def refused(fn: Callable[..., Any], /, **kw: Any) -> dict[str, str]:
    with pytest.raises(botocore.exceptions.ClientError) as error:
        await call(fn, **kw)
    return error.value.response["Error"]


async def poll(check: Callable[[], Awaitable[Any]], timeout: float = 120, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached after {timeout}s")
        await asyncio.sleep(0.2)


def sleeper(family: str, command: list[str] | None = None, memory: str = "128", **env: str) -> dict[str, Any]:
    return {
        "family": family,
        "taskRoleArn": "pixfleet-worker",
        "cpu": "128",
        "memory": memory,
        "containerDefinitions": [
            {
                "name": "main",
                "image": "pixfleet-worker:latest",
                "command": command or SLEEP,
                "essential": True,
                "stopTimeout": 5,
                "environment": [{"name": k, "value": v} for k, v in env.items()],
                # Healthy once a check passes: a revision whose tasks exit at once never is (the breaker trips).
                "healthCheck": {"command": ["CMD", "python", "-c", "pass"], "interval": 5, "retries": 2},
            }
        ],
    }


async def aws_cli(stack: EmbeddedStack, *args: str) -> Any:
    signer = admin_signer(stack.admin_token, ACCOUNT)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": signer.access_key_id,
        "AWS_SECRET_ACCESS_KEY": signer.secret_access_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_ECS": stack.orchestrator_url,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "awscli", "ecs", *args, env=env, stdout=-1, stderr=-1
    )
    out, err = await asyncio.wait_for(process.communicate(), 180)
    assert process.returncode == 0, err.decode()
    return json.loads(out) if out.strip() else None


async def test_task_definitions_revisions_tags_listing_and_paging(fleet: StackClient) -> None:
    ecs = ecs_client(fleet.stack)
    first = await call(ecs.register_task_definition, **sleeper("tdtest"), tags=[{"key": "team", "value": "a"}])
    second = await call(ecs.register_task_definition, **sleeper("tdtest"))  # identical content: still a new revision
    r1, r2 = first["taskDefinition"]["revision"], second["taskDefinition"]["revision"]
    assert r2 == r1 + 1
    arn1 = first["taskDefinition"]["taskDefinitionArn"]
    assert arn1 == f"arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/tdtest:{r1}"
    described = await call(ecs.describe_task_definition, taskDefinition=arn1, include=["TAGS"])
    assert described["tags"] == [{"key": "team", "value": "a"}]
    assert described["taskDefinition"]["containerDefinitions"][0]["command"] == SLEEP
    latest = await call(ecs.describe_task_definition, taskDefinition="tdtest")
    assert latest["taskDefinition"]["revision"] == r2

    page1 = await call(ecs.list_task_definitions, familyPrefix="tdtest", maxResults=1)
    assert page1["taskDefinitionArns"] == [arn1] and page1["nextToken"]
    page2 = await call(ecs.list_task_definitions, familyPrefix="tdtest", maxResults=1, nextToken=page1["nextToken"])
    assert page2["taskDefinitionArns"] == [second["taskDefinition"]["taskDefinitionArn"]]
    desc = await call(ecs.list_task_definitions, familyPrefix="tdtest", sort="DESC")
    assert desc["taskDefinitionArns"][0].endswith(f":{r2}")
    assert "tdtest" in (await call(ecs.list_task_definition_families, familyPrefix="td"))["families"]

    gone = await call(ecs.deregister_task_definition, taskDefinition=f"tdtest:{r1}")
    assert gone["taskDefinition"]["status"] == "INACTIVE"
    active = await call(ecs.list_task_definitions, familyPrefix="tdtest")
    assert [a.rsplit(":", 1)[1] for a in active["taskDefinitionArns"]] == [str(r2)]
    every = await call(ecs.list_task_definitions, familyPrefix="tdtest", status="ALL")
    assert len(every["taskDefinitionArns"]) == 2

    error = await refused(ecs.describe_task_definition, taskDefinition="no-such-family")
    assert error == {"Code": "ClientException", "Message": "Unable to describe task definition."}
    error = await refused(ecs.register_task_definition, **{**sleeper("tdtest"), "cpu": "lots"})
    assert error["Code"] == "ClientException" and "cpu" in error["Message"]

    cli = await aws_cli(fleet.stack, "describe-task-definition", "--task-definition", f"tdtest:{r2}")
    assert cli["taskDefinition"]["taskDefinitionArn"].endswith(f"tdtest:{r2}")


async def test_a_service_scales_waits_stable_and_the_circuit_breaker_rolls_back(fleet: StackClient) -> None:
    stack = fleet.stack
    ecs = ecs_client(stack)
    good = (await call(ecs.register_task_definition, **sleeper("svc")))["taskDefinition"]["taskDefinitionArn"]
    answer = await call(
        ecs.create_service,
        cluster="pixfleet",
        serviceName="sleepers",
        taskDefinition=good,
        desiredCount=1,
        deploymentConfiguration={
            "minimumHealthyPercent": 100,
            "maximumPercent": 200,
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
        },
        tags=[{"key": "app", "value": "test"}],
    )
    created = answer["service"]
    arn = created["serviceArn"]
    assert arn == f"arn:aws:ecs:us-east-1:{ACCOUNT}:service/pixfleet/sleepers" and created["status"] == "ACTIVE"
    waiter = ecs.get_waiter("services_stable")
    await call(waiter.wait, cluster="pixfleet", services=["sleepers"], WaiterConfig={"Delay": 1, "MaxAttempts": 120})

    await call(ecs.update_service, cluster="pixfleet", service=arn, desiredCount=3)
    await call(waiter.wait, cluster="pixfleet", services=[arn], WaiterConfig={"Delay": 1, "MaxAttempts": 120})

    async def completed() -> dict[str, Any] | None:
        """As on ECS, the waiter counts RUNNING tasks; the rollout completes once they pass their checks."""
        answer = await call(ecs.describe_services, cluster="pixfleet", services=["sleepers"], include=["TAGS"])
        (service,) = answer["services"]
        return service if service["deployments"][0]["rolloutState"] == "COMPLETED" else None

    service = await poll(completed, timeout=60, what="the rollout to complete")
    assert (service["desiredCount"], service["runningCount"], service["pendingCount"]) == (3, 3, 0)
    (deployment,) = service["deployments"]
    assert deployment["status"] == "PRIMARY" and deployment["rolloutState"] == "COMPLETED"
    assert deployment["runningCount"] == 3 and deployment["taskDefinition"] == good
    assert service["tags"] == [{"key": "app", "value": "test"}]
    assert any("desired count set to 3" in e["message"] for e in service["events"])
    times = [e["createdAt"] for e in service["events"]]
    assert times == sorted(times, reverse=True)  # newest first
    listed = await call(ecs.list_tasks, cluster="pixfleet", serviceName="sleepers")
    assert len(listed["taskArns"]) == 3
    tasks = (await call(ecs.describe_tasks, cluster="pixfleet", tasks=listed["taskArns"]))["tasks"]
    assert {t["group"] for t in tasks} == {"service:sleepers"} and {t["lastStatus"] for t in tasks} == {"RUNNING"}

    broken = await call(ecs.register_task_definition, **sleeper("svc", ["python", "-c", "raise SystemExit(3)"]))
    broken_arn = broken["taskDefinition"]["taskDefinitionArn"]
    await call(ecs.update_service, cluster="pixfleet", service="sleepers", taskDefinition=broken_arn)
    seen: dict[str, Any] = {}

    async def rolled_back() -> bool:
        (now,) = (await call(ecs.describe_services, cluster="pixfleet", services=["sleepers"]))["services"]
        for d in now["deployments"]:
            if d["taskDefinition"] == broken_arn and d["rolloutState"] == "FAILED":
                seen["failed"] = d
        primary = next(d for d in now["deployments"] if d["status"] == "PRIMARY")
        seen["service"] = now
        return "failed" in seen and primary["taskDefinition"] == good

    await poll(rolled_back, timeout=240, what="the circuit breaker's rollback")
    assert "circuit breaker" in seen["failed"]["rolloutStateReason"]
    messages = [e["message"] for e in seen["service"]["events"]]
    assert any("Rolling back to svc:" in m for m in messages), messages[:10]
    await call(waiter.wait, cluster="pixfleet", services=["sleepers"], WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    (after,) = (await call(ecs.describe_services, cluster="pixfleet", services=["sleepers"]))["services"]
    assert after["taskDefinition"] == good and after["runningCount"] == 3

    # The AWS CLI, as the AWS docs write it: scale down, wait, delete.
    await aws_cli(stack, "update-service", "--cluster", "pixfleet", "--service", "sleepers", "--desired-count", "1")
    await aws_cli(stack, "wait", "services-stable", "--cluster", "pixfleet", "--services", "sleepers")
    described = await aws_cli(stack, "describe-services", "--cluster", "pixfleet", "--services", "sleepers")
    assert described["services"][0]["runningCount"] == 1
    error = await refused(ecs.delete_service, cluster="pixfleet", service="sleepers")
    assert error["Code"] == "InvalidParameterException"
    deleted = await aws_cli(stack, "delete-service", "--cluster", "pixfleet", "--service", "sleepers", "--force")
    assert deleted["service"]["status"] == "DRAINING"

    async def inactive() -> bool:
        (s,) = (await call(ecs.describe_services, cluster="pixfleet", services=["sleepers"]))["services"]
        return s["status"] == "INACTIVE"

    await poll(inactive, timeout=60, what="the deleted service to be INACTIVE")
    error = await refused(ecs.update_service, cluster="pixfleet", service="sleepers", desiredCount=1)
    assert error["Code"] in ("ServiceNotFoundException", "ServiceNotActiveException")


async def test_run_task_to_completion_stop_task_and_the_task_waiters(fleet: StackClient) -> None:
    stack = fleet.stack
    ecs = ecs_client(stack)
    await call(ecs.register_task_definition, **sleeper("oneoff"))
    ran = await call(
        ecs.run_task,
        cluster="pixfleet",
        taskDefinition="oneoff",
        startedBy="test-suite",
        overrides={
            "containerOverrides": [
                {
                    "name": "main",
                    "command": ["python", "-c", "import os; raise SystemExit(0 if os.environ['X'] == 'y' else 4)"],
                    "environment": [{"name": "X", "value": "y"}],
                }
            ]
        },
    )
    (task,) = ran["tasks"]
    assert ran["failures"] == [] and task["group"] == "family:oneoff"
    assert task["taskArn"].startswith(f"arn:aws:ecs:us-east-1:{ACCOUNT}:task/pixfleet/")
    await call(ecs.get_waiter("tasks_stopped").wait, cluster="pixfleet", tasks=[task["taskArn"]],
               WaiterConfig={"Delay": 1, "MaxAttempts": 120})  # fmt: skip
    (done,) = (await call(ecs.describe_tasks, cluster="pixfleet", tasks=[task["taskArn"]]))["tasks"]
    assert done["lastStatus"] == "STOPPED" and done["containers"][0]["exitCode"] == 0
    assert done["stopCode"] == "EssentialContainerExited" and done["startedBy"] == "test-suite"
    assert {"createdAt", "startedAt", "stoppedAt"} <= set(done)
    by_starter = await call(ecs.list_tasks, cluster="pixfleet", startedBy="test-suite", desiredStatus="STOPPED")
    assert task["taskArn"] in by_starter["taskArns"]

    long = (await call(ecs.run_task, cluster="pixfleet", taskDefinition="oneoff", count=2))["tasks"]
    arns = [t["taskArn"] for t in long]
    await call(ecs.get_waiter("tasks_running").wait, cluster="pixfleet", tasks=arns,
               WaiterConfig={"Delay": 1, "MaxAttempts": 60})  # fmt: skip
    running = await call(ecs.list_tasks, cluster="pixfleet", family="oneoff", maxResults=1)
    assert len(running["taskArns"]) == 1 and running["nextToken"]
    paginated = ecs.get_paginator("list_tasks").paginate(
        cluster="pixfleet", family="oneoff", PaginationConfig={"PageSize": 1}
    )
    assert sorted(a for p in await asyncio.to_thread(list, paginated) for a in p["taskArns"]) == sorted(arns)
    stopped = await call(ecs.stop_task, cluster="pixfleet", task=arns[0], reason="no longer needed")
    assert stopped["task"]["desiredStatus"] == "STOPPED"
    await aws_cli(stack, "stop-task", "--cluster", "pixfleet", "--task", arns[1].rsplit("/", 1)[1])
    await aws_cli(stack, "wait", "tasks-stopped", "--cluster", "pixfleet", "--tasks", *arns)
    done = (await call(ecs.describe_tasks, cluster="pixfleet", tasks=arns))["tasks"]
    assert [t["stoppedReason"] for t in done] == ["no longer needed", "Task stopped by user"]
    assert {t["stopCode"] for t in done} == {"UserInitiated"}


async def test_a_task_that_does_not_fit_is_not_started(fleet: StackClient) -> None:
    ecs = ecs_client(fleet.stack)
    (instance,) = (await call(ecs.list_container_instances, cluster="pixfleet"))["containerInstanceArns"]
    (described,) = (await call(ecs.describe_container_instances, cluster="pixfleet", containerInstances=[instance]))[
        "containerInstances"
    ]
    registered = {r["name"]: r["integerValue"] for r in described["registeredResources"]}
    remaining = {r["name"]: r["integerValue"] for r in described["remainingResources"]}
    assert registered["CPU"] >= (os.cpu_count() or 1) * 1024 and remaining["MEMORY"] < registered["MEMORY"]
    assert described["runningTasksCount"] >= 3  # api, worker, deadletter
    huge = str(registered["MEMORY"] + 1024)
    await call(ecs.register_task_definition, **sleeper("huge", memory=huge))
    ran = await call(ecs.run_task, cluster="pixfleet", taskDefinition="huge", count=2)
    assert ran["tasks"] == [] and ran["failures"] == [{"arn": instance, "reason": "RESOURCE:MEMORY"}] * 2

    await call(ecs.create_service, cluster="pixfleet", serviceName="toobig", taskDefinition="huge", desiredCount=1)

    async def unplaced() -> list[str]:
        (s,) = (await call(ecs.describe_services, cluster="pixfleet", services=["toobig"]))["services"]
        return [e["message"] for e in s["events"] if "RESOURCE:MEMORY" in e["message"]] and s["runningCount"] == 0

    await poll(unplaced, timeout=30, what="the unable-to-place event")
    await call(ecs.delete_service, cluster="pixfleet", service="toobig", force=True)


async def test_clusters_and_tags(fleet: StackClient) -> None:
    ecs = ecs_client(fleet.stack)
    created = (await call(ecs.create_cluster, clusterName="extra", tags=[{"key": "a", "value": "1"}]))["cluster"]
    assert created["status"] == "ACTIVE" and created["registeredContainerInstancesCount"] == 0
    arns = (await call(ecs.list_clusters))["clusterArns"]
    assert {a.rsplit("/", 1)[1] for a in arns} >= {"pixfleet", "extra"}
    described = await call(ecs.describe_clusters, clusters=["pixfleet", "missing"], include=["TAGS"])
    assert described["clusters"][0]["activeServicesCount"] >= 3
    # No cluster named: the orchestrator's own (pixfleet's choice; ECS would use "default").
    unnamed = (await call(ecs.list_services))["serviceArns"]
    assert f"arn:aws:ecs:us-east-1:{ACCOUNT}:service/pixfleet/worker" in unnamed
    assert [f["reason"] for f in described["failures"]] == ["MISSING"]
    await call(ecs.tag_resource, resourceArn=created["clusterArn"], tags=[{"key": "b", "value": "2"}])
    await call(ecs.untag_resource, resourceArn=created["clusterArn"], tagKeys=["a"])
    assert (await call(ecs.list_tags_for_resource, resourceArn=created["clusterArn"]))["tags"] == [
        {"key": "b", "value": "2"}
    ]
    error = await refused(ecs.run_task, cluster="extra", taskDefinition="pixfleet-worker")
    assert error["Code"] == "InvalidParameterException"
    assert (await call(ecs.delete_cluster, cluster="extra"))["cluster"]["status"] == "INACTIVE"
    error = await refused(ecs.delete_cluster, cluster="pixfleet")
    assert error["Code"] == "ClusterContainsServicesException"
    error = await refused(ecs.tag_resource, resourceArn=created["clusterArn"], tags=[{"key": "c", "value": "3"}])
    assert error["Code"] == "ResourceNotFoundException"


@pytest.mark.parametrize(
    ("action", "params", "code"),
    [
        ("list_services", {"cluster": "nope"}, "ClusterNotFoundException"),
        ("update_service", {"cluster": "pixfleet", "service": "nope", "desiredCount": 1}, "ServiceNotFoundException"),
        ("run_task", {"cluster": "pixfleet", "taskDefinition": "nope:1"}, "ClientException"),
        ("stop_task", {"cluster": "pixfleet", "task": "0" * 32}, "InvalidParameterException"),
        ("describe_services", {"services": ["x"], "cluster": "arn:aws:ecs:us-east-1:1:task/a/b"}, "InvalidParameterException"),
    ],
    ids=["unknown cluster", "unknown service", "unknown task definition", "unknown task", "wrong kind of ARN"],
)  # fmt: skip
async def test_refusals_use_ecs_error_types(fleet: StackClient, action: str, params: dict[str, Any], code: str) -> None:
    error = await refused(getattr(ecs_client(fleet.stack), action), **params)
    assert error["Code"] == code, error


async def test_field_paths_unsigned_and_task_credentials(fleet: StackClient) -> None:
    stack = fleet.stack
    ecs = ecs_client(stack)
    ecs.meta.events.register("before-parameter-build.ecs.*", lambda params, **_: None)
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    def raw(body: dict[str, Any], sign: bool = True) -> tuple[int, dict[str, Any]]:
        request = AWSRequest(
            method="POST",
            url=stack.orchestrator_url + "/",
            data=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": "AmazonEC2ContainerServiceV20141113.UpdateService",
            },
        )
        if sign:
            SigV4Auth(ecs._request_signer._credentials, "ecs", "us-east-1").add_auth(request)
        prepared = request.prepare()
        http = urllib.request.Request(prepared.url, data=prepared.body, headers=dict(prepared.headers), method="POST")
        try:
            with urllib.request.urlopen(http) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    bad = {"service": "worker", "deploymentConfiguration": {"maximumPercent": "lots"}}
    status, body = await asyncio.to_thread(raw, bad)
    assert status == 400 and body["__type"] == "InvalidParameterException"
    assert "deploymentConfiguration.maximumPercent" in body["message"]
    status, body = await asyncio.to_thread(raw, {"service": "worker"}, False)
    assert status == 403 and body["__type"] == "MissingAuthenticationTokenException"

    # A task's own credentials (its role, from the credentials endpoint) cannot call the control plane.
    from test_orchestrator import task_environ

    worker = (await stack.tasks("worker"))[0]
    env = task_environ(worker["pid"])
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            env["AWS_CONTAINER_CREDENTIALS_FULL_URI"],
            headers={"Authorization": env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]},
        ) as r,
    ):
        creds = await r.json()
    as_task = boto3.client(
        "ecs",
        region_name="us-east-1",
        endpoint_url=stack.orchestrator_url,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["Token"],
    )
    error = await refused(as_task.list_services, cluster="pixfleet")
    assert error["Code"] == "AccessDeniedException"
    trail = [json.loads(line) for line in (stack.state_dir / "orchestrator" / "audit.jsonl").read_text().splitlines()]
    assert any(e["eventName"] == "ListServices" and e.get("errorCode") == "AccessDeniedException" for e in trail)
    assert any(e["eventName"] == "RunTask" and "errorCode" not in e for e in trail)


async def test_the_rest_api_still_answers_beside_it(fleet: StackClient) -> None:
    services = await fleet.stack.services()
    assert {"api", "worker", "deadletter"} <= set(services)


async def test_services_tags_and_the_audit_trail_survive_an_orchestrator_restart(fleet: StackClient) -> None:
    stack = fleet.stack
    ecs = ecs_client(stack)
    await call(ecs.register_task_definition, **sleeper("survivor"))
    await call(
        ecs.create_service,
        cluster="pixfleet",
        serviceName="survivor",
        taskDefinition="survivor",
        desiredCount=1,
        tags=[{"key": "keep", "value": "me"}],
    )
    waiter = ecs.get_waiter("services_stable")
    await call(waiter.wait, cluster="pixfleet", services=["survivor"], WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    before = (await call(ecs.list_tasks, cluster="pixfleet", serviceName="survivor"))["taskArns"]
    stack.kill_orchestrator()  # a crash: tasks keep running
    await stack.runtime.wait(stack.orchestrator)
    await stack.start_orchestrator()
    (service,) = (await call(ecs.describe_services, cluster="pixfleet", services=["survivor"], include=["TAGS"]))[
        "services"
    ]
    assert service["status"] == "ACTIVE" and service["tags"] == [{"key": "keep", "value": "me"}]
    assert (await call(ecs.list_tasks, cluster="pixfleet", serviceName="survivor"))["taskArns"] == before  # adopted
    trail = [json.loads(line) for line in (stack.state_dir / "orchestrator" / "audit.jsonl").read_text().splitlines()]
    assert any(e["eventName"] == "CreateService" and e["requestParameters"]["serviceName"] == "survivor" for e in trail)
    await call(ecs.delete_service, cluster="pixfleet", service="survivor", force=True)
