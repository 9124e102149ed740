"""`docker-compose build` then `docker-compose up`: the compose file's own ``build:`` sections, the
way a Docker user runs them without pixfleet's tools (README, Containers).

Where Docker Hub is reachable the base would be python:3.13-slim. This engine pulls nothing, so the
base is the image kit's debootstrapped ``pixfleet/base:trixie`` (``PIXFLEET_BASE_IMAGE``), pip installs
from the wheelhouse the kit fills on the host (``infra/images/extra/wheels``: no index in the builds),
and LocalStack is the kit's offline build. The images get plain tags of their own: Docker cannot tag
a build with a digest (the kit's ``.env`` pins digests), and these must not replace the kit's images.

Needs a Docker engine and docker-compose, like test_containers.py (which owns the same task subnet:
one stack at a time).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import images
from compose_fixtures import PROJECT, REPO, compose_stack, running_tasks, submit, until, wait_job
from infra.images.build import (
    COMPONENT_LABEL,
    EXTRA_DIR,
    HOST_CA_BUNDLE,
    IMAGES,
    OFFLINE_BASE_IMAGE,
    BuildOptions,
    ImageKit,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

TAG = "compose-build"
# What `docker-compose build` builds: every image of the kit's Dockerfiles (LocalStack is pulled, online)
BUILT = {image.env_var: f"{image.repository}:{TAG}" for image in IMAGES if image.key not in ("localstack", "moto")}
WHEELHOUSE = REPO / "build" / "wheelhouse"  # kept between runs: pip downloads only what it lacks


@pytest.fixture(scope="module")
def wheelhouse(offline_images: dict[str, str], docker_client: Any) -> Iterator[Path]:
    """``infra/images/extra/`` as ``pixfleet images build --wheelhouse build/wheelhouse`` leaves it:
    the host's CA bundle, and every file the locks pin, downloaded on the host; emptied afterwards."""
    options = BuildOptions(
        offline=True,
        ca_bundle=HOST_CA_BUNDLE if HOST_CA_BUNDLE.is_file() else None,
        wheelhouse=WHEELHOUSE,
        registry="none",
    )
    kit = ImageKit(options, Console(stderr=True, width=80), client=docker_client)
    started = time.monotonic()
    kit.stage_extras([image for image in IMAGES if image.key != "localstack"])  # moto.lock too: see the test
    print(f"wheelhouse: {time.monotonic() - started:.0f}s")
    try:
        yield EXTRA_DIR / "wheels"
    finally:
        shutil.rmtree(EXTRA_DIR / "wheels", ignore_errors=True)


def test_compose_build_then_up_serves_uploads_through_the_load_balancer(
    offline_images: dict[str, str], wheelhouse: Path, docker_client: Any
) -> None:
    assert any(wheelhouse.glob("*.whl"))  # the builds' pip uses no index
    base = docker_client.images.get(OFFLINE_BASE_IMAGE)
    env = {
        "PIXFLEET_BASE_IMAGE": OFFLINE_BASE_IMAGE,
        "LOCALSTACK_IMAGE": offline_images["LOCALSTACK_IMAGE"],
        **BUILT,
    }
    # the classic builder builds every stage before its target: lb, the last, needs moto's venv too
    with compose_stack("localstack", docker_client, env, build=True) as stack:
        assert "Looking in indexes" not in (REPO / "build" / "images" / "compose-build.log").read_text()  # no PyPI
        for var, reference in BUILT.items():
            image = docker_client.images.get(reference)
            key = next(i.key for i in IMAGES if i.env_var == var)
            assert image.labels[COMPONENT_LABEL] == key
            assert image.attrs["RootFS"]["Layers"][0] == base.attrs["RootFS"]["Layers"][0], f"{key}: not on the base"
            assert image.attrs["Config"]["User"] not in ("", "root", "0"), key

        project = {
            c.labels["com.docker.compose.service"]: c.attrs["Config"]["Image"]
            for c in docker_client.containers.list(filters={"label": f"com.docker.compose.project={PROJECT}"})
        }
        assert {service: project.get(service) for service in ("orchestrator", "lb", "registry")} == {
            "orchestrator": BUILT["PIXFLEET_ORCHESTRATOR_IMAGE"],
            "lb": BUILT["PIXFLEET_LB_IMAGE"],
            "registry": BUILT["PIXFLEET_REGISTRY_IMAGE"],
        }
        until(lambda: len(running_tasks(docker_client, "api")) == 2, 120, "two API tasks running")

        # what a user does: an upload through the load balancer's published port, processed by a worker task
        job = wait_job(stack.api_url, submit(stack.api_url, images.photo_jpeg(1200, 900), "thumbs"), timeout=180)
        assert job["status"] == "succeeded", job
        assert [(o["width"], o["height"]) for o in job["outputs"]] == [(256, 256)]
        ran = {(s, c.attrs["Config"]["Image"]) for s in ("api", "worker") for c in running_tasks(docker_client, s)}
        assert ran == {("api", BUILT["PIXFLEET_API_IMAGE"]), ("worker", BUILT["PIXFLEET_WORKER_IMAGE"])}
