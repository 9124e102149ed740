"""Fixtures for the compose stack in containers: images built offline, a stack per emulator.

Needs a Docker engine and docker-compose (``.ci/run`` installs and starts them). Without
an engine these tests skip, unless ``PIXFLEET_REQUIRE_DOCKER=1`` (set by CI) makes that
a failure. The images are built once per session with ``pixfleet images build
--offline`` (cold: a few minutes; warm: seconds), then each emulator's stack is brought
up under its own compose project on a spare port and torn down again, and the teardown
checks that no task container is left behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pixfleet.orchestrator_client import OrchestratorClient


REPO = Path(__file__).resolve().parents[1]
# Another project name (and ports) for a second engineer on the same engine: PIXFLEET_TEST_COMPOSE_PROJECT=d13…
PROJECT = os.environ.get("PIXFLEET_TEST_COMPOSE_PROJECT", "pixfleettest")
API_PORT = int(os.environ.get("PIXFLEET_TEST_API_PORT", "18480"))
ORCH_PORT = int(os.environ.get("PIXFLEET_TEST_ORCH_PORT", "18490"))
ORCH_URL = f"http://127.0.0.1:{ORCH_PORT}"
ADMIN_TOKEN = "container-tests"
TASK_SUBNET = "169.254.170.0/24"  # one stack per engine can have it


def _engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
        return True
    except Exception:
        return False


def compose_command() -> list[str]:
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
    subprocess.run(
        [sys.executable, "-m", "pixfleet", "images", "build", "--offline"], cwd=REPO, check=True, timeout=1500
    )
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
        return subprocess.run(
            [*self.compose, *args], cwd=REPO, env=self.env, check=check, timeout=timeout, capture_output=True, text=True
        )


def get_json(url: str, timeout: float = 5) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, None


def wait_healthy(stack: Stack, deadline_s: float = 180) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            status, _ = get_json(f"{stack.api_url}/healthz")
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            logs = stack.run("logs", "--tail", "60", check=False).stdout
            raise AssertionError(f"the API at {stack.api_url} did not become healthy:\n{logs}")
        time.sleep(1)


def task_containers(client: Any) -> list[Any]:
    """This test project's task containers (those on its task network)."""
    # ignore_removed: a container removed between the listing and its inspection (a scale-in) is no error
    return client.containers.list(
        all=True, filters={"label": "pixfleet.cluster", "network": f"{PROJECT}_tasks"}, ignore_removed=True
    )


@contextmanager
def compose_stack(
    emulator: str, docker_client: Any, extra_env: dict[str, str] | None = None, *, build: bool = False
) -> Iterator[Stack]:
    """The compose stack with one emulator; ``down`` afterwards must leave no task container.

    ``build``: ``compose build`` first (the compose file's own ``build:`` sections; log in
    build/images/compose-build.log), as a Docker user does before ``up``.
    """
    files = "docker-compose.yml" + (":docker-compose.moto.yml" if emulator == "moto" else "")
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": PROJECT,
        "COMPOSE_FILE": files,
        "PIXFLEET_API_PORT": str(API_PORT),
        "PIXFLEET_ORCH_HOST_PORT": str(ORCH_PORT),
        "PIXFLEET_ORCH_ADMIN_TOKEN": ADMIN_TOKEN,
        **(extra_env or {}),
    }
    s = Stack(emulator, f"http://127.0.0.1:{API_PORT}", compose_command(), env)
    s.run("down", "-v", "--remove-orphans", check=False)
    taken = [n.name for n in docker_client.networks.list() if TASK_SUBNET in json.dumps(n.attrs.get("IPAM"))]
    if taken:
        pytest.fail(
            f"another stack holds the task subnet {TASK_SUBNET} on this engine ({', '.join(taken)}): stop it first"
        )
    try:
        if build:
            started = time.monotonic()
            built = s.run("build", check=False, timeout=1800)
            log = REPO / "build" / "images" / "compose-build.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(built.stdout + built.stderr)
            assert built.returncode == 0, f"`{' '.join(s.compose)} build` failed (log: {log}):\n{built.stderr[-3000:]}"
            print(f"{' '.join(s.compose)} build: {time.monotonic() - started:.0f}s")
        up = s.run("up", "-d", check=False)
        assert up.returncode == 0, up.stdout + up.stderr + s.run("logs", "--tail", "80", check=False).stdout
        wait_healthy(s)
        yield s
    finally:
        launched = [c.id for c in task_containers(docker_client)]
        down = s.run("down", "-v", "--remove-orphans", check=False, timeout=180)
        left = [c.name for c in docker_client.containers.list(all=True, ignore_removed=True) if c.id in launched]
        assert down.returncode == 0, down.stdout + down.stderr
        assert left == [], f"`compose down` left task containers behind: {left}"


def submit(api_url: str, body: bytes, preset: str) -> str:
    request = urllib.request.Request(
        f"{api_url}/v1/images?preset={preset}", data=body, headers={"Content-Type": "image/jpeg"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202
        return json.load(response)["job_id"]


def wait_job(api_url: str, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, job = get_json(f"{api_url}/v1/jobs/{job_id}")
        if status == 200 and job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not finished after {timeout}s")


def control() -> OrchestratorClient:
    """The compose orchestrator's ECS API (published on loopback), with the test's admin token."""
    return OrchestratorClient(ORCH_URL, ADMIN_TOKEN, timeout=30)


def services() -> dict[str, dict[str, Any]]:
    """DescribeServices of every service, summarised (``pixfleet.orchestrator_client``)."""
    return {s["serviceName"]: s for s in asyncio.run(control().services())}


def tasks(service: str | None = None, status: str | None = "RUNNING") -> list[dict[str, Any]]:
    """ListTasks + DescribeTasks, summarised."""
    return asyncio.run(control().tasks(service, status))


def until(predicate: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll ``predicate`` until it returns something truthy (no fixed sleeps as synchronisation)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached after {timeout:.0f}s")
        time.sleep(interval)


def running_tasks(docker_client: Any, service: str) -> list[Any]:
    return [
        c
        for c in task_containers(docker_client)
        if c.labels.get("pixfleet.service") == service and c.status == "running"
    ]
