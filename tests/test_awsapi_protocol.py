"""The AWS JSON protocol layer (services/orchestrator/awsapi) against boto3 and the AWS CLI: SigV4
verification, model validation with AWS's field paths, AWS's error shapes, paging, the audit trail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from aiohttp import web

from pipeline.net import free_port
from services.orchestrator.awsapi.audit import HIDDEN, AuditLog
from services.orchestrator.awsapi.errors import AwsApiError
from services.orchestrator.awsapi.protocol import AwsJsonEndpoint, AwsService, Call, page
from services.orchestrator.awsapi.signing import Signer

ADMIN = Signer("AKIAPIXFLEETADMIN000", "admin-secret", "arn:aws:iam::123456789012:user/pixfleet-bootstrap")
TASK_KEY = "ASIATASKKEY000000000"
CLUSTERS = [f"arn:aws:ecs:us-east-1:123456789012:cluster/c{i}" for i in range(7)]


async def list_clusters(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    arns, token = page(CLUSTERS, params)
    return {"clusterArns": arns, **({"nextToken": token} if token else {})}


async def describe_clusters(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    names = params.get("clusters") or ["default"]
    if "missing" in names:
        raise AwsApiError("ClusterNotFoundException", "Cluster not found.")
    return {
        "clusters": [{"clusterName": n, "status": "ACTIVE", "clusterArn": f"arn:aws:ecs:::cluster/{n}"} for n in names],
        "failures": [],
    }


async def register_task_definition(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "taskDefinition": {
            "family": params["family"],
            "revision": 1,
            "status": "ACTIVE",
            "registeredAt": 1_800_000_000.5,
        }
    }


async def bad_answer(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    return {"clusters": "not a list"}


async def describe_scalable_targets(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    return {"ScalableTargets": []}


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, AuditLog]]:
    import asyncio

    audit = AuditLog(tmp_path_factory.mktemp("audit") / "audit.jsonl")
    ecs = AwsService(
        "ecs",
        {
            "ListClusters": list_clusters,
            "DescribeClusters": describe_clusters,
            "RegisterTaskDefinition": register_task_definition,
            "DescribeCapacityProviders": bad_answer,
        },
        invalid_input="InvalidParameterException",
    )
    aas = AwsService(
        "application-autoscaling",
        {"DescribeScalableTargets": describe_scalable_targets},
        invalid_input="ValidationException",
    )
    handler = AwsJsonEndpoint(
        [ecs, aas],
        lambda: {ADMIN.access_key_id: ADMIN},
        region="us-east-1",
        audit=audit,
        task_key=lambda key: "arn:aws:sts::123456789012:assumed-role/pixfleet-worker/t1" if key == TASK_KEY else None,
        validate_responses=True,
    )
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()

    app = web.Application()
    app.router.add_post("/", handler.handle)
    runner = web.AppRunner(app)

    async def serve() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(serve()), loop.run_forever()), daemon=True)
    thread.start()
    started.wait(10)
    yield f"http://127.0.0.1:{port}", audit
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def client(
    url: str, service: str = "ecs", key: str = ADMIN.access_key_id, secret: str = ADMIN.secret_access_key, **kw: Any
) -> Any:
    return boto3.client(
        service, region_name="us-east-1", endpoint_url=url, aws_access_key_id=key, aws_secret_access_key=secret, **kw
    )


def test_a_signed_call_is_answered_in_the_models_shape(endpoint: tuple[str, AuditLog]) -> None:
    url, _ = endpoint
    ecs = client(url)
    answer = ecs.describe_clusters(clusters=["a", "b"])
    assert [c["clusterName"] for c in answer["clusters"]] == ["a", "b"]
    registered = ecs.register_task_definition(family="f", containerDefinitions=[{"name": "c", "image": "i"}])
    assert registered["taskDefinition"]["registeredAt"].timestamp() == 1_800_000_000.5  # epoch seconds on the wire


def test_paging_with_next_token_and_the_paginator(endpoint: tuple[str, AuditLog]) -> None:
    url, _ = endpoint
    ecs = client(url)
    first = ecs.list_clusters(maxResults=3)
    assert first["clusterArns"] == CLUSTERS[:3] and first["nextToken"]
    pages = list(ecs.get_paginator("list_clusters").paginate(PaginationConfig={"PageSize": 2}))
    assert [a for p in pages for a in p["clusterArns"]] == CLUSTERS and len(pages) == 4
    with pytest.raises(botocore.exceptions.ClientError) as bad:
        ecs.list_clusters(nextToken="%%%")
    assert bad.value.response["Error"]["Code"] == "InvalidParameterException"


@pytest.mark.parametrize(
    ("params", "says"),
    [
        (
            {
                "family": "f",
                "containerDefinitions": [{"name": "c", "image": "i", "portMappings": [{"containerPort": "80"}]}],
            },
            "containerDefinitions[0].portMappings[0].containerPort",
        ),
        (
            {"family": "f", "containerDefinitions": [{"name": "c", "image": "i", "bogus": 1}]},
            'Unknown parameter in containerDefinitions[0]: "bogus"',
        ),
        ({"containerDefinitions": []}, 'Missing required parameter in input: "family"'),
    ],
    ids=["wrong type", "unknown field", "missing field"],
)
def test_what_the_model_refuses_is_refused_with_field_paths(
    endpoint: tuple[str, AuditLog], params: dict[str, Any], says: str
) -> None:
    """Sent raw (botocore would refuse these before sending): the server holds the same line."""
    url, _ = endpoint
    ecs = client(url)
    ecs.meta.events.register("before-parameter-build.ecs.*", lambda params, **_: None)
    answer = _raw(ecs, "RegisterTaskDefinition", params)
    assert answer["status"] == 400 and answer["body"]["__type"] == "InvalidParameterException", answer
    assert says in answer["body"]["message"]


def _raw(ecs: Any, action: str, params: dict[str, Any]) -> dict[str, Any]:
    """A signed request with a body botocore would not build itself."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    import urllib.request

    request = AWSRequest(
        method="POST",
        url=ecs.meta.endpoint_url + "/",
        data=json.dumps(params).encode(),
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"AmazonEC2ContainerServiceV20141113.{action}",
        },
    )
    SigV4Auth(ecs._request_signer._credentials, "ecs", "us-east-1").add_auth(request)
    prepared = request.prepare()
    http = urllib.request.Request(prepared.url, data=prepared.body, headers=dict(prepared.headers), method="POST")
    try:
        with urllib.request.urlopen(http) as r:
            return {"status": r.status, "body": json.load(r)}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": json.load(exc)}


@pytest.mark.parametrize(
    ("who", "code"),
    [
        ("unknown key", "UnrecognizedClientException"),
        ("wrong secret", "InvalidSignatureException"),
        ("a task's credentials", "AccessDeniedException"),
    ],
)
def test_refused_callers(endpoint: tuple[str, AuditLog], who: str, code: str) -> None:
    url, _ = endpoint
    key, secret = {
        "unknown key": ("AKIAUNKNOWN000000000", "x"),
        "wrong secret": (ADMIN.access_key_id, "wrong"),
        "a task's credentials": (TASK_KEY, "whatever"),
    }[who]
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        client(url, key=key, secret=secret).list_clusters()
    assert refused.value.response["Error"]["Code"] == code


def test_an_unsigned_request_is_refused(endpoint: tuple[str, AuditLog]) -> None:
    import urllib.request

    url, _ = endpoint
    request = urllib.request.Request(
        url + "/",
        data=b"{}",
        method="POST",
        headers={
            "X-Amz-Target": "AmazonEC2ContainerServiceV20141113.ListClusters",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)
    assert refused.value.code == 403 and json.load(refused.value)["__type"] == "MissingAuthenticationTokenException"


def test_errors_unknown_and_unimplemented_operations(endpoint: tuple[str, AuditLog]) -> None:
    url, _ = endpoint
    ecs = client(url)
    with pytest.raises(ecs.exceptions.ClusterNotFoundException):
        ecs.describe_clusters(clusters=["missing"])
    with pytest.raises(botocore.exceptions.ClientError) as unsupported:
        ecs.list_account_settings()
    assert unsupported.value.response["Error"]["Code"] == "UnsupportedFeatureException"
    assert "ListClusters" in unsupported.value.response["Error"]["Message"]
    with pytest.raises(botocore.exceptions.ClientError) as broken:  # an answer that breaks the model is our bug: 500
        client(url, config=botocore.config.Config(retries={"max_attempts": 1})).describe_capacity_providers()
    assert broken.value.response["Error"]["Code"] == "ServerException"
    assert (
        client(url, "application-autoscaling").describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]
        == []
    )


def test_the_aws_cli_works_against_it(endpoint: tuple[str, AuditLog]) -> None:
    url, _ = endpoint
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ADMIN.access_key_id,
        "AWS_SECRET_ACCESS_KEY": ADMIN.secret_access_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_ECS": url,
    }
    out = subprocess.run(
        [sys.executable, "-m", "awscli", "ecs", "list-clusters"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["clusterArns"] == CLUSTERS  # the CLI follows nextToken by itself


def test_every_call_is_audited_with_secrets_hidden(endpoint: tuple[str, AuditLog], tmp_path: Path) -> None:
    url, audit = endpoint
    env = [{"name": "DB_PASSWORD", "value": "hunter2"}, {"name": "MODE", "value": "fast"}]
    client(url).register_task_definition(
        family="audited", containerDefinitions=[{"name": "c", "image": "i", "environment": env}]
    )
    with pytest.raises(botocore.exceptions.ClientError):
        client(url, key="AKIAUNKNOWN000000000").list_clusters()
    events = list(audit.newest_first(10))
    refused, registered = events[0], next(e for e in events if e["eventName"] == "RegisterTaskDefinition")
    assert (
        refused["errorCode"] == "UnrecognizedClientException"
        and refused["userIdentity"]["accessKeyId"] == "AKIAUNKNOWN000000000"
    )
    assert registered["userIdentity"]["arn"] == ADMIN.principal_arn and registered["eventSource"] == "ecs.amazonaws.com"
    values = {e["name"]: e["value"] for e in registered["requestParameters"]["containerDefinitions"][0]["environment"]}
    assert values == {"DB_PASSWORD": HIDDEN, "MODE": "fast"} and not registered["readOnly"]
    assert AuditLog(audit.path).newest_first(1).__next__()["eventID"] == refused["eventID"]  # kept across restarts
