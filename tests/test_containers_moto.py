"""The compose stack on moto's server with IAM enforced: the task roles, proven from inside the containers.

LocalStack's free edition enforces no IAM, so this is the emulator that shows each task can
do only what its role allows. Same matrix as tests/test_iam.py, run with the credentials each
container gets from the orchestrator's endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import images
from compose_fixtures import PROJECT, Stack, compose_stack, running_tasks, submit, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

# Runs inside a container with the image's Python: try each call with the default credential
# chain (the container credentials endpoint, or the orchestrator's profile) and report.
PROBE = r"""
import json, sys, botocore.session
checks, queue = json.loads(sys.argv[1]), sys.argv[2]
session = botocore.session.get_session()
s3, sqs = session.create_client("s3"), session.create_client("sqs")
calls = {
    "put input uploads/": lambda: s3.put_object(Bucket="pixfleet-input", Key="uploads/probe/original", Body=b"x"),
    "put output results/": lambda: s3.put_object(Bucket="pixfleet-output", Key="results/probe/x.jpg", Body=b"x"),
    "get input uploads/": lambda: s3.get_object(Bucket="pixfleet-input", Key="uploads/probe/original"),
    "get output results/": lambda: s3.get_object(Bucket="pixfleet-output", Key="results/probe/x.jpg"),
    "send job": lambda: sqs.send_message(QueueUrl=queue, MessageBody="{}"),
    "receive job": lambda: sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0, VisibilityTimeout=0),
    "queue attributes": lambda: sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"]),
}
out = {"arn": session.create_client("sts").get_caller_identity()["Arn"]}
for name in checks:
    try:
        calls[name]()
        out[name] = "allowed"
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
        out[name] = "allowed" if code in ("NoSuchKey", "404") else "denied"  # a 404 got past IAM
print(json.dumps(out))
"""

MATRIX = {
    "api": {
        "put input uploads/": "allowed",
        "send job": "allowed",
        "get output results/": "allowed",
        "put output results/": "denied",
        "receive job": "denied",
    },
    "worker": {
        "get input uploads/": "allowed",
        "put output results/": "allowed",
        "receive job": "allowed",
        "put input uploads/": "denied",
        "send job": "denied",
    },
    "orchestrator": {
        "queue attributes": "allowed",
        "get input uploads/": "denied",
        "put output results/": "denied",
        "put input uploads/": "denied",
    },
}


@pytest.fixture(scope="module")
def stack(offline_images: dict[str, str], docker_client: Any) -> Iterator[Stack]:
    with compose_stack("moto", docker_client) as s:
        yield s


def _container(docker_client: Any, service: str) -> Any:
    if service == "orchestrator":
        (c,) = docker_client.containers.list(
            filters={"label": [f"com.docker.compose.project={PROJECT}", "com.docker.compose.service=orchestrator"]}
        )
        return c
    tasks = running_tasks(docker_client, service)  # the API: two behind the load balancer (or three, replacing one)
    assert tasks, f"no running {service} task"
    return tasks[0]


def _env(container: Any) -> dict[str, str]:
    return dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])


def test_an_upload_is_rendered_under_iam_enforcement(stack: Stack) -> None:
    job = wait_job(stack.api_url, submit(stack.api_url, images.photo_jpeg(640, 480), "thumbs"))
    assert job["status"] == "succeeded", job


@pytest.mark.parametrize("service", sorted(MATRIX))
def test_each_container_can_act_only_within_its_role(stack: Stack, docker_client: Any, service: str) -> None:
    queue = _env(_container(docker_client, "api"))["PIXFLEET_QUEUE_URL"]
    checks = MATRIX[service]
    result = _container(docker_client, service).exec_run(["python", "-c", PROBE, json.dumps(list(checks)), queue])
    assert result.exit_code == 0, result.output.decode()
    got = json.loads(result.output.decode().strip().splitlines()[-1])
    role = "pixfleet-orchestrator" if service == "orchestrator" else f"pixfleet-{service}"
    assert f":assumed-role/{role}/" in got.pop("arn")
    assert got == checks


def test_one_tasks_token_cannot_fetch_another_tasks_credentials(stack: Stack, docker_client: Any) -> None:
    api, worker = _container(docker_client, "api"), _container(docker_client, "worker")
    api_uri = _env(api)["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
    fetch = (
        "import sys, urllib.request, urllib.error\n"
        "req = urllib.request.Request(sys.argv[1], headers={'Authorization': sys.argv[2]})\n"
        "try:\n    print(urllib.request.urlopen(req, timeout=5).status)\n"
        "except urllib.error.HTTPError as e:\n    print(e.code)\n"
    )
    own = api.exec_run(["python", "-c", fetch, api_uri, _env(api)["AWS_CONTAINER_AUTHORIZATION_TOKEN"]])
    stolen = worker.exec_run(["python", "-c", fetch, api_uri, _env(worker)["AWS_CONTAINER_AUTHORIZATION_TOKEN"]])
    assert own.output.decode().strip() == "200"
    assert stolen.output.decode().strip() == "403"
