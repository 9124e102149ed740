"""The compose stack on LocalStack: images built offline, ECS-style task containers, failure drills.

Needs a Docker engine and docker-compose (``.ci/run`` installs and starts them); without an
engine these tests skip, unless ``PIXFLEET_REQUIRE_DOCKER=1`` (set by CI) makes that a
failure. The moto stack, which proves the task roles, is in test_containers_moto.py.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

import images
from compose_fixtures import (
    ADMIN_TOKEN,
    PROJECT,
    Stack,
    compose_stack,
    get_json,
    services,
    tasks,
    running_tasks,
    submit,
    task_containers,
    until,
    wait_job,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

SLOW_OPERATIONS = [
    {"name": f"big{i}", "width": 2000 - 200 * i, "height": 2000 - 200 * i, "format": "avif"} for i in range(3)
]


@pytest.fixture(scope="module")
def stack(offline_images: dict[str, str], docker_client: Any) -> Iterator[Stack]:
    """LocalStack, workers autoscaled 1..4 with a short scale-in cooldown and visibility timeout."""
    with compose_stack(
        "localstack",
        docker_client,
        {
            "PIXFLEET_WORKERS_MIN": "1",
            "PIXFLEET_WORKERS_MAX": "4",
            "PIXFLEET_SCALE_IN_COOLDOWN": "5",
            "PIXFLEET_VISIBILITY_TIMEOUT": "15",
        },
    ) as s:
        yield s


def worker_count() -> tuple[int, int]:
    worker = services()["worker"]
    return worker["desiredCount"], worker["runningCount"]


def test_offline_images_are_pinned_and_run_as_non_root(offline_images: dict[str, str], docker_client: Any) -> None:
    assert offline_images["LOCALSTACK_IMAGE"] == "pixfleet/localstack:4.14.0-offline"
    for key in ("PIXFLEET_API_IMAGE", "PIXFLEET_WORKER_IMAGE", "PIXFLEET_ORCHESTRATOR_IMAGE", "PIXFLEET_MOTO_IMAGE"):
        image = docker_client.images.get(offline_images[key])
        config = image.attrs["Config"]
        assert config["User"] not in ("", "root", "0"), key
        assert config.get("Healthcheck", {}).get("Test"), key
    out = docker_client.containers.run(
        offline_images["PIXFLEET_WORKER_IMAGE"],
        ["python", "-c", "import PIL, aiobotocore, sys; print(sys.version_info[:2])"],
        remove=True,
    )
    assert out.strip() == b"(3, 13)"


def test_thirty_images_over_http_all_succeed(stack: Stack) -> None:
    sizes = [(640 + 37 * i, 480 + 23 * i) for i in range(30)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        jobs = list(pool.map(lambda wh: submit(stack.api_url, images.photo_jpeg(*wh, seed=wh[0]), "web"), sizes))
        done = list(pool.map(lambda j: wait_job(stack.api_url, j, timeout=300), jobs))
    for (w, h), job in zip(sizes, done, strict=True):
        assert job["status"] == "succeeded", job
        outputs = {o["variant"]: o for o in job["outputs"]}
        assert set(outputs) == {"w1600", "w800", "w320", "w320-webp"}
        for variant, box in (("w1600", 1600), ("w800", 800), ("w320", 320)):
            expected = (w, h) if w <= box else (box, round(h * box / w))  # fit the width, never enlarge
            assert (outputs[variant]["width"], outputs[variant]["height"]) == expected, (variant, w, h)
    with urllib.request.urlopen(done[0]["outputs"][0]["url"], timeout=30) as r:
        assert r.headers["Content-Type"] == "image/jpeg" and r.read(3) == b"\xff\xd8\xff"


def test_tasks_are_ecs_style_containers(stack: Stack, docker_client: Any) -> None:
    running = [c for c in task_containers(docker_client) if c.status == "running"]
    tasks = {c.labels["pixfleet.service"]: c for c in running}
    assert set(tasks) == {"api", "worker", "deadletter"}
    assert sum(c.labels["pixfleet.service"] == "api" for c in running) == 2  # desiredCount 2 behind the LB
    for service, container in tasks.items():
        attrs = container.attrs
        env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"} & set(env), (
            service
        )
        assert env["AWS_CONTAINER_CREDENTIALS_FULL_URI"].startswith("http://169.254.170.2/")
        assert env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
        assert env["AWS_ENDPOINT_URL"] == "http://aws:4566"
        assert attrs["Config"]["User"] not in ("", "root", "0")
        assert container.labels["pixfleet.task"] and container.labels["pixfleet.taskdef"].startswith(
            f"pixfleet-{service}:"
        )
        assert attrs["HostConfig"]["NanoCpus"] > 0 and attrs["HostConfig"]["Memory"] > 0
        assert not any(m.get("Source") == "/var/run/docker.sock" for m in attrs["Mounts"])
        networks = set(attrs["NetworkSettings"]["Networks"])
        published = {k: v for k, v in (attrs["NetworkSettings"]["Ports"] or {}).items() if v}
        # private: the emulator, the credentials endpoint and (the API) the load balancer only
        assert networks == {f"{PROJECT}_tasks"}
        assert published == {}
    # Of all the stack's containers, only the orchestrator has the Docker socket.
    project = docker_client.containers.list(filters={"label": f"com.docker.compose.project={PROJECT}"})
    with_socket = {
        c.labels["com.docker.compose.service"]
        for c in project
        if any(m.get("Source") == "/var/run/docker.sock" for m in c.attrs["Mounts"])
    }
    assert with_socket == {"orchestrator"}
    # The only thing published on the edge is the load balancer's listener (and loopback-only ports).
    edge = {
        c.labels["com.docker.compose.service"]: {
            b["HostIp"] for bindings in (c.attrs["NetworkSettings"]["Ports"] or {}).values() for b in bindings or []
        }
        for c in project
    }
    public = {name for name, hosts in edge.items() if hosts - {"127.0.0.1"}}
    assert public == {"lb"}, edge


def lb_counters(docker_client: Any) -> dict[str, int]:
    """Requests per target of the API's target group, from HAProxy's runtime API inside the lb container."""
    (lb,) = docker_client.containers.list(
        filters={"label": [f"com.docker.compose.project={PROJECT}", "com.docker.compose.service=lb"]}
    )
    script = (
        "import asyncio, json; from pathlib import Path; from services.orchestrator.lb.runtime_api import RuntimeAPI; "
        "s = asyncio.run(RuntimeAPI(Path('/run/pixfleet-lb/haproxy.sock')).servers('pixfleet-api')); "
        "print(json.dumps({k: v.total for k, v in s.items()}))"
    )
    code, out = lb.exec_run(["python", "-c", script])
    assert code == 0, out
    return json.loads(out)


def test_the_api_is_two_tasks_behind_the_load_balancer_and_both_get_traffic(stack: Stack, docker_client: Any) -> None:
    def in_service() -> bool:
        api = services()["api"]
        (lb,) = api["loadBalancers"]
        states = [d["TargetHealth"]["State"] for d in lb["targetHealthDescriptions"]]
        return api["runningCount"] == 2 and states == ["healthy", "healthy"]

    until(in_service, 120, "two API tasks healthy in their target group")
    before = lb_counters(docker_client)
    small = images.photo_jpeg(64, 64)
    for _ in range(20):
        submit(stack.api_url, small, "thumbs")
    after = lb_counters(docker_client)
    api_ids = {c.labels["pixfleet.task"] for c in running_tasks(docker_client, "api")}
    assert set(after) == api_ids
    counts = [after[i] - before.get(i, 0) for i in api_ids]
    assert sum(counts) == 20 and min(counts) >= 8, counts  # round robin: ±20 % of 10 each


def test_a_burst_scales_worker_containers_out_and_back_in(stack: Stack, docker_client: Any) -> None:
    small = images.photo_jpeg(400, 300)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        jobs = list(pool.map(lambda i: submit(stack.api_url, small, "thumbs"), range(150)))
    until(lambda: len(running_tasks(docker_client, "worker")) == 4, 90, "4 worker containers in `docker ps`")
    assert worker_count()[1] == 4  # and the orchestrator (`pixfleet status`) says so
    status = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pixfleet",
                "status",
                "--json",
                "--orchestrator",
                f"http://127.0.0.1:{stack.env['PIXFLEET_ORCH_HOST_PORT']}",
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PIXFLEET_ORCHESTRATOR_TOKEN": ADMIN_TOKEN},  # ECS calls are signed
        ).stdout
    )
    assert any(s["serviceName"] == "worker" and s["desiredCount"] >= 2 for s in status["services"])
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        done = list(pool.map(lambda j: wait_job(stack.api_url, j, timeout=300), jobs))
    assert all(j["status"] == "succeeded" for j in done)
    # None lost, none rendered twice: one attempt in each history, the one that succeeded (a message that a
    # draining worker handed back before starting it counts a delivery, not an attempt).
    twice = [j for j in done if [a["outcome"] for a in j["history"]] != ["succeeded"]]
    assert not twice, [j["history"] for j in twice]
    until(
        lambda: worker_count() == (1, 1) and len(running_tasks(docker_client, "worker")) == 1,
        120,
        "scale back in to 1 worker container",
    )


def test_docker_kill_of_a_busy_worker(stack: Stack, docker_client: Any) -> None:
    until(
        lambda: worker_count() == (1, 1) and len(running_tasks(docker_client, "worker")) == 1,
        120,
        "one worker container",
    )
    (victim,) = running_tasks(docker_client, "worker")
    body = b'--x\r\nContent-Disposition: form-data; name="operations"\r\n\r\n' + json.dumps(SLOW_OPERATIONS).encode()
    body += b'\r\n--x\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    body += images.photo_jpeg(2200, 2200, seed=5) + b"\r\n--x--\r\n"
    request = urllib.request.Request(
        f"{stack.api_url}/v1/images",
        data=body,
        headers={"Content-Type": "multipart/form-data; boundary=x"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        job_id = json.load(r)["job_id"]
    until(lambda: get_json(f"{stack.api_url}/v1/jobs/{job_id}")[1]["status"] == "processing", 60, "the job to start")
    victim.kill()  # docker kill: SIGKILL, mid-job
    until(
        lambda: [c for c in running_tasks(docker_client, "worker") if c.id != victim.id],
        90,
        "a replacement worker container",
    )
    job = wait_job(stack.api_url, job_id, timeout=240)
    assert job["status"] == "succeeded", job
    assert job["attempts"] >= 2  # redelivered after the visibility timeout
    assert sorted(o["variant"] for o in job["outputs"]) == ["big0", "big1", "big2"]  # one set of outputs
    stopped = tasks("worker", status="STOPPED")
    assert any(t["containerId"] == victim.id and t["exitCode"] == 137 for t in stopped)


def test_a_paused_emulator_gives_503_then_everything_finishes(stack: Stack, docker_client: Any) -> None:
    (aws,) = docker_client.containers.list(
        filters={"label": [f"com.docker.compose.project={PROJECT}", "com.docker.compose.service=aws"]}
    )
    photo = images.photo_jpeg(800, 600)
    accepted = [submit(stack.api_url, photo, "web") for _ in range(10)]  # load in flight when the emulator stops
    aws.pause()
    paused_at = time.monotonic()
    try:
        request = urllib.request.Request(
            f"{stack.api_url}/v1/images?preset=web", data=photo, headers={"Content-Type": "image/jpeg"}, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=30)
        assert time.monotonic() - paused_at < 10  # answered while the emulator was still paused
        assert info.value.code == 503
        assert int(info.value.headers["Retry-After"]) >= 1
        assert json.loads(info.value.read())["error"]["code"] == "aws_unavailable"
        remaining = 10 - (time.monotonic() - paused_at)
        if remaining > 0:
            until(lambda: time.monotonic() - paused_at >= 10, remaining + 1, "the 10 s pause", interval=0.2)
    finally:
        aws.unpause()
    done = [wait_job(stack.api_url, j, timeout=300) for j in accepted]
    assert [j["status"] for j in done] == ["succeeded"] * 10  # no accepted job lost
    assert submit(stack.api_url, photo, "thumbs")


def test_a_soak_under_docker_kill_and_docker_pause_loses_nothing(stack: Stack, tmp_path: Any) -> None:
    """`pixfleet chaos --docker`: busy worker containers killed, the emulator container paused; nothing lost."""
    from compose_fixtures import ORCH_URL

    report_path = tmp_path / "chaos.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pixfleet",
            "chaos",
            "--docker",
            "--api",
            stack.api_url,
            "--orchestrator",
            ORCH_URL,
            "--project",
            PROJECT,
            "--jobs",
            "200",
            "--rate",
            "10",
            "--kill-every",
            "2-3",
            "--min-kills",
            "5",
            "--pause",
            "5",
            "--json",
            str(report_path),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "PIXFLEET_ORCHESTRATOR_TOKEN": ADMIN_TOKEN},
    )
    assert report_path.exists(), run.stdout[-2000:] + run.stderr[-3000:]
    report = json.loads(report_path.read_text())
    missed = [goal for goal, ok in report["goals"].items() if not ok]
    assert run.returncode == 0 and not missed, (missed, report["kills"], run.stdout[-3000:])
    assert report["accepted"] == 200 and report["lost"] == [] and report["stuck"] == []
    assert report["bad_outputs"] == [] and report["extra_objects"] == [] and report["kills"] >= 5
