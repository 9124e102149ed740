"""The compose stack in containers: images built offline, both emulators, ECS-style tasks.

Needs a Docker engine and docker-compose (``.ci/run`` installs and starts them). Without
an engine these tests skip, unless ``PIXFLEET_REQUIRE_DOCKER=1`` (set by CI) makes that
a failure. The images are built once per session with ``pixfleet images build
--offline`` (cold: a few minutes; warm: seconds), then each emulator's stack is brought
up under its own compose project on a spare port and torn down again, and the teardown
checks that no task container is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from images import photo_jpeg

REPO = Path(__file__).resolve().parents[1]
PROJECT = "pixfleettest"
API_PORT = 18480
TASK_SUBNET = "169.254.170.0/24"  # one stack per engine can have it
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
        return True
    except Exception:  # noqa: BLE001 — any failure means "no engine"
        return False


def _compose_command() -> list[str]:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor docker-compose is installed")


@pytest.fixture(scope="session")
def docker_client() -> Any:
    if not _engine_answers():
        if os.environ.get("PIXFLEET_REQUIRE_DOCKER") == "1":
            pytest.fail("PIXFLEET_REQUIRE_DOCKER=1 but no Docker engine answers")
        pytest.skip("no Docker engine")
    import docker

    return docker.from_env(timeout=120)


@pytest.fixture(scope="session")
def offline_images(docker_client: Any) -> dict[str, str]:
    """Every image built with ``pixfleet images build --offline``; the pins it wrote in .env."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "infra.images", "build", "--offline"], cwd=REPO, check=True, timeout=1500)
    print(f"pixfleet images build --offline: {time.monotonic() - started:.0f}s")
    from infra.images.build import read_env_file

    return read_env_file(REPO / ".env")


@dataclass
class Stack:
    emulator: str
    api_url: str
    compose: list[str]
    env: dict[str, str]

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.compose, *args], cwd=REPO, env=self.env, check=check, timeout=timeout, capture_output=True, text=True)


def _get(url: str, timeout: float = 5) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _wait_healthy(stack: Stack, deadline_s: float = 180) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            status, _ = _get(f"{stack.api_url}/healthz")
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            logs = stack.run("logs", "--tail", "60", check=False).stdout
            raise AssertionError(f"the API at {stack.api_url} did not become healthy:\n{logs}")
        time.sleep(1)


def _task_containers(client: Any) -> list[Any]:
    """This test project's task containers (those on its task network)."""
    return client.containers.list(all=True, filters={"label": "pixfleet.cluster", "network": f"{PROJECT}_tasks"})


@pytest.fixture(scope="session", params=["localstack", "moto"])
def stack(request: pytest.FixtureRequest, offline_images: dict[str, str], docker_client: Any) -> Iterator[Stack]:
    """The compose stack with one emulator; ``down`` afterwards must leave no task container."""
    files = "docker-compose.yml" + (":docker-compose.moto.yml" if request.param == "moto" else "")
    env = {**os.environ, "COMPOSE_PROJECT_NAME": PROJECT, "COMPOSE_FILE": files, "PIXFLEET_API_PORT": str(API_PORT)}
    s = Stack(request.param, f"http://127.0.0.1:{API_PORT}", _compose_command(), env)
    s.run("down", "-v", "--remove-orphans", check=False)
    taken = [n.name for n in docker_client.networks.list() if TASK_SUBNET in json.dumps(n.attrs.get("IPAM"))]
    if taken:
        pytest.fail(f"another stack holds the task subnet {TASK_SUBNET} on this engine ({', '.join(taken)}): stop it first")
    try:
        up = s.run("up", "-d", check=False)
        assert up.returncode == 0, up.stdout + up.stderr + s.run("logs", "--tail", "80", check=False).stdout
        _wait_healthy(s)
        yield s
    finally:
        launched = [c.id for c in _task_containers(docker_client)]
        down = s.run("down", "-v", "--remove-orphans", check=False, timeout=180)
        left = [c.name for c in docker_client.containers.list(all=True) if c.id in launched]
        assert down.returncode == 0, down.stdout + down.stderr
        assert left == [], f"`compose down` left task containers behind: {left}"


def _submit(api_url: str, body: bytes, preset: str) -> str:
    request = urllib.request.Request(f"{api_url}/v1/images?preset={preset}", data=body, headers={"Content-Type": "image/jpeg"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202
        return json.load(response)["job_id"]


def _wait_job(api_url: str, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, job = _get(f"{api_url}/v1/jobs/{job_id}")
        if status == 200 and job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not finished after {timeout}s")


# --- the images ------------------------------------------------------------------------------


def test_offline_images_are_pinned_and_run_as_non_root(offline_images: dict[str, str], docker_client: Any) -> None:
    assert offline_images["LOCALSTACK_IMAGE"] == "pixfleet/localstack:4.14.0-offline"
    for key in ("PIXFLEET_API_IMAGE", "PIXFLEET_WORKER_IMAGE", "PIXFLEET_ORCHESTRATOR_IMAGE", "PIXFLEET_MOTO_IMAGE"):
        image = docker_client.images.get(offline_images[key])
        config = image.attrs["Config"]
        assert config["User"] not in ("", "root", "0"), key
        assert config.get("Healthcheck", {}).get("Test"), key
    out = docker_client.containers.run(
        offline_images["PIXFLEET_WORKER_IMAGE"], ["python", "-c", "import PIL, aiobotocore, sys; print(sys.version_info[:2])"], remove=True
    )
    assert out.strip() == b"(3, 13)"


# --- the stack ---------------------------------------------------------------------------------


def test_an_uploaded_image_is_rendered_by_a_worker_container(stack: Stack) -> None:
    job = _wait_job(stack.api_url, _submit(stack.api_url, photo_jpeg(640, 480), "thumbs"))
    assert job["status"] == "succeeded", job
    assert [(o["variant"], o["width"], o["height"]) for o in job["outputs"]] == [("thumb", 256, 256)]


def test_tasks_are_ecs_style_containers(stack: Stack, docker_client: Any) -> None:
    tasks = {c.labels["pixfleet.service"]: c for c in _task_containers(docker_client) if c.status == "running"}
    assert set(tasks) == {"api", "worker"}
    for service, container in tasks.items():
        attrs = container.attrs
        env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"} & set(env), service
        assert env["AWS_CONTAINER_CREDENTIALS_FULL_URI"].startswith("http://169.254.170.2/") or "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" in env
        assert env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
        assert env["AWS_ENDPOINT_URL"] == "http://aws:4566"
        assert container.labels["pixfleet.task"] and container.labels["pixfleet.taskdef"].startswith(f"pixfleet-{service}:")
        assert attrs["HostConfig"]["NanoCpus"] > 0 and attrs["HostConfig"]["Memory"] > 0
        assert not any(m.get("Source") == "/var/run/docker.sock" for m in attrs["Mounts"])
        networks = set(attrs["NetworkSettings"]["Networks"])
        published = {k: v for k, v in (attrs["NetworkSettings"]["Ports"] or {}).items() if v}
        if service == "api":
            assert networks == {f"{PROJECT}_tasks", f"{PROJECT}_edge"}
            assert published["8080/tcp"][0]["HostPort"] == str(API_PORT)
        else:
            assert networks == {f"{PROJECT}_tasks"}  # private: the emulator and the credentials endpoint only
            assert published == {}


def test_task_roles_are_enforced_on_moto(stack: Stack, docker_client: Any) -> None:
    if stack.emulator != "moto":
        pytest.skip("LocalStack's free edition enforces no IAM; moto proves the task roles")
    (worker,) = [c for c in _task_containers(docker_client) if c.labels.get("pixfleet.service") == "worker" and c.status == "running"]
    probe = (
        "import botocore.session\n"
        "s = botocore.session.get_session()\n"
        "print(s.create_client('sts').get_caller_identity()['Arn'])\n"
        "try:\n"
        "    s.create_client('s3').put_object(Bucket='pixfleet-input', Key='uploads/x', Body=b'x')\n"
        "    print('allowed')\n"
        "except Exception as exc:\n"
        "    print('refused', getattr(exc, 'response', {}).get('Error', {}).get('Code'))\n"
    )
    result = worker.exec_run(["python", "-c", probe])
    arn, outcome = result.output.decode().strip().splitlines()[-2:]
    assert ":assumed-role/pixfleet-worker/" in arn
    assert outcome == "refused AccessDenied"  # the worker role may not write the input bucket
