"""The image kit and the compose entry points, without Docker: .env pinning, options, task
definitions of a deployment, and the provision step against a real moto server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.ecs_apply import Description

from infra.images.build import BuildOptions, read_env_file, update_env_file
from infra.images.compose import (
    AWS_CONFIG_FILE,
    OUTPUTS_FILE,
    ProvisionSettings,
    deployment_description,
    provision_main,
)
from infra.images.locks import LOCKS, pinned

REPO = Path(__file__).resolve().parents[1]


def test_env_file_pins_images_and_keeps_everything_else(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# mine\nLOCALSTACK_AUTH_TOKEN=abc\nPIXFLEET_API_IMAGE=old\nCOMPOSE_PROJECT_NAME=mystack\n")
    update_env_file(env, {"PIXFLEET_API_IMAGE": "pixfleet/api:123"}, {"COMPOSE_PROJECT_NAME": "pixfleet", "X": "1"})
    assert (
        env.read_text()
        == "# mine\nLOCALSTACK_AUTH_TOKEN=abc\nPIXFLEET_API_IMAGE=pixfleet/api:123\nCOMPOSE_PROJECT_NAME=mystack\nX=1\n"
    )
    assert read_env_file(env)["PIXFLEET_API_IMAGE"] == "pixfleet/api:123"


@pytest.mark.parametrize(
    ("options", "problems", "images"),
    [
        (BuildOptions(offline=True), [], ["api", "worker", "orchestrator", "moto", "lb", "registry", "localstack"]),
        (BuildOptions(), [], ["api", "worker", "orchestrator", "moto", "lb", "registry"]),
        (BuildOptions(only=("worker", "localstack")), [], ["worker", "localstack"]),
        (BuildOptions(only=("registry",)), [], ["registry"]),
        (BuildOptions(registry="http://127.0.0.1:5000"), [], None),
        (BuildOptions(registry="none"), [], None),
        (BuildOptions(registry="ftp://127.0.0.1"), ["--registry: 'ftp://127.0.0.1' is not a registry URL"], None),
        (BuildOptions(only=("nginx",)), ["--only: unknown image 'nginx'"], []),
        (BuildOptions(ca_bundle=Path("/nonexistent.pem")), ["--ca-bundle: /nonexistent.pem is not a file"], None),
        (BuildOptions(base_image="debian:13", only=("base",)), ["--only base makes the debootstrap base"], None),
    ],
)
def test_build_options(options: BuildOptions, problems: list[str], images: list[str] | None) -> None:
    found = options.problems()
    assert len(found) == len(problems) and all(f.startswith(p) for f, p in zip(found, problems, strict=True))
    if images is not None:
        assert [image.key for image in options.images()] == images


def test_every_pushed_image_is_pinned_by_digest_but_the_registry_itself() -> None:
    from infra.images.build import IMAGES, Built

    digest = "sha256:" + "ab" * 32
    results = [
        Built(image, f"{image.repository}:0123456789ab", 1.0, pushed=f"127.0.0.1:5000/{image.repository}@{digest}")
        if image.push
        else Built(image, f"{image.repository}:0123456789ab", 1.0)
        for image in IMAGES
    ]
    pins = {r.image.env_var: r.pin for r in results if r.image is not None}
    assert pins["PIXFLEET_API_IMAGE"] == f"127.0.0.1:5000/pixfleet/api@{digest}"
    assert pins["PIXFLEET_ORCHESTRATOR_IMAGE"] == f"127.0.0.1:5000/pixfleet/orchestrator@{digest}"
    assert pins["PIXFLEET_REGISTRY_IMAGE"] == "pixfleet/registry:0123456789ab"  # it cannot come from itself
    assert [i.key for i in IMAGES if not i.push] == ["registry"]


def test_compose_builds_every_image_from_the_kits_dockerfiles() -> None:
    """Each image the kit builds has a `build:` in compose on the same Dockerfile and target."""
    import yaml

    from infra.images.build import IMAGES

    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    services |= yaml.safe_load((REPO / "docker-compose.moto.yml").read_text())["services"]
    builds = {
        (s["build"]["dockerfile"], s["build"].get("target")): s["image"] for s in services.values() if "build" in s
    }
    for image in IMAGES:
        if image.key == "localstack":  # online, compose pulls LocalStack from Docker Hub
            continue
        key = (f"infra/images/{image.dockerfile}", image.target)
        assert key in builds, f"no compose build for {image.key}"
        assert builds[key] == f"${{{image.env_var}:-{image.repository}:latest}}"
    registry = services["registry"]
    assert registry["ports"] == ["127.0.0.1:${PIXFLEET_REGISTRY_PORT:-5000}:5000"]  # loopback only
    assert all(
        s["build"]["args"] == {"BASE_IMAGE": "${PIXFLEET_BASE_IMAGE:-python:3.13-slim}"}
        for s in services.values()
        if "build" in s
    )


def test_locks_pin_the_versions_that_matter() -> None:
    locks = {lock.name: pinned(lock) for lock in LOCKS}
    assert locks["localstack.lock"]["localstack-core"] == "4.14.0"
    assert locks["localstack.lock"]["cbor2"].startswith("5.") and locks["localstack.lock"]["pyopenssl"] == "25.3.0"
    assert "docker" in locks["orchestrator.lock"] and "moto" in locks["moto.lock"]
    assert not {"moto", "pytest", "docker"} & set(locks["requirements.lock"])
    for layered in ("orchestrator.lock", "moto.lock"):  # installed on top of requirements.lock: same pins
        assert {k: v for k, v in locks[layered].items() if k in locks["requirements.lock"]} == locks[
            "requirements.lock"
        ]


def test_the_deployment_names_images_and_publishes_the_api() -> None:
    env = {
        "PIXFLEET_API_IMAGE": "pixfleet/api:abc",
        "PIXFLEET_WORKER_IMAGE": "pixfleet/worker:def",
        "PIXFLEET_API_HOST_PORT": "18080",
    }
    description = deployment_description(Description.load(), env, "jobs-x")
    api = description.task_definition("pixfleet-api")["containerDefinitions"][0]
    worker = description.task_definition("pixfleet-worker")["containerDefinitions"][0]
    assert (api["image"], worker["image"]) == ("pixfleet/api:abc", "pixfleet/worker:def")
    assert {"name": "PIXFLEET_API_HOST", "value": "0.0.0.0"} in api["environment"]
    assert [m["hostPort"] for m in api["portMappings"] if m["containerPort"] == 8080] == [18080]
    metrics = description.scaling[0]["PutScalingPolicy"][0]["TargetTrackingScalingPolicyConfiguration"][
        "CustomizedMetricSpecification"
    ]["Metrics"]
    queues = {d["Value"] for m in metrics if "MetricStat" in m for d in m["MetricStat"]["Metric"]["Dimensions"]}
    assert "jobs-x" in queues  # the metric math names the stack's own queue

    behind = deployment_description(Description.load(), {**env, "PIXFLEET_LB_RUNTIME_API": "/s"})
    api = behind.task_definition("pixfleet-api")["containerDefinitions"][0]
    assert [m.get("hostPort") for m in api["portMappings"] if m["containerPort"] == 8080] == [None]  # private


@pytest.mark.parametrize(
    ("env", "api_tasks", "load_balancers"),
    [
        ({}, 1, False),  # no load balancer: one API task, published itself
        ({"PIXFLEET_LB_RUNTIME_API": "/run/pixfleet-lb/haproxy.sock"}, 2, True),
        ({"PIXFLEET_LB_RUNTIME_API": "/run/pixfleet-lb/haproxy.sock", "PIXFLEET_API_TASKS": "3"}, 3, True),
    ],
)
def test_the_deployment_puts_the_api_behind_the_load_balancer(
    env: dict[str, str], api_tasks: int, load_balancers: bool
) -> None:
    api = deployment_description(Description.load(), env).service("api")
    assert api["desiredCount"] == api_tasks and bool(api.get("loadBalancers")) == load_balancers


@pytest.mark.parametrize(
    ("env", "limits", "policy"),
    [
        ({}, (1, 4), {"ScaleInCooldown": 30, "TargetValue": 10}),
        (
            {"PIXFLEET_WORKERS_MIN": "2", "PIXFLEET_WORKERS_MAX": "6", "PIXFLEET_SCALE_IN_COOLDOWN": "5"},
            (2, 6),
            {"ScaleInCooldown": 5, "TargetValue": 10},
        ),
        ({"PIXFLEET_WORKERS_MIN": "5", "PIXFLEET_TARGET_BACKLOG": "3"}, (5, 5), {"TargetValue": 3.0}),
    ],
)
def test_the_deployment_scales_the_worker_as_asked(
    env: dict[str, str], limits: tuple[int, int], policy: dict[str, float]
) -> None:
    description = deployment_description(Description.load(), env)
    scaling = description.scaling_of("worker")
    assert scaling is not None
    target = scaling["RegisterScalableTarget"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == limits
    config = scaling["PutScalingPolicy"][0]["TargetTrackingScalingPolicyConfiguration"]
    assert {k: config[k] for k in policy} == policy
    assert description.service("worker")["desiredCount"] >= limits[0]


@pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose is not installed")
@pytest.mark.parametrize("files", ["docker-compose.yml", "docker-compose.yml:docker-compose.moto.yml"])
def test_compose_files_are_valid(files: str) -> None:
    env = {**os.environ, "COMPOSE_FILE": files}
    subprocess.run(["docker-compose", "config", "-q"], cwd=REPO, env=env, check=True, capture_output=True)


def test_provision_step_on_moto_enforces_iam_and_hands_the_orchestrator_its_role(fresh_moto, tmp_path: Path) -> None:
    server = fresh_moto()
    settings = ProvisionSettings.from_env(
        {"AWS_ENDPOINT_URL": server.url, "PIXFLEET_EMULATOR": "moto", "PIXFLEET_STACK_DIR": str(tmp_path)}
    )
    assert provision_main(settings) == 0
    assert (tmp_path / AWS_CONFIG_FILE).stat().st_mode & 0o777 == 0o600
    outputs = json.loads((tmp_path / OUTPUTS_FILE).read_text())
    assert provision_main(settings) == 0  # again, against an enforcing moto: the saved admin keys still work

    # What the orchestrator container does: AWS_PROFILE → botocore assumes the orchestrator role.
    probe = (
        "import botocore.session, botocore.exceptions, sys\n"
        "s = botocore.session.get_session()\n"
        "print(s.create_client('sts').get_caller_identity()['Arn'])\n"
        "try:\n"
        f"    s.create_client('s3').put_object(Bucket={outputs['input_bucket']!r}, Key='uploads/x', Body=b'x')\n"
        "    print('allowed')\n"
        "except botocore.exceptions.ClientError as exc:\n"
        "    print('refused', exc.response['Error']['Code'])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
        "AWS_ENDPOINT_URL": server.url,
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / AWS_CONFIG_FILE),
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_PROFILE": "pixfleet-orchestrator",
    }
    arn, outcome = subprocess.run(
        [sys.executable, "-c", probe], env=env, check=True, capture_output=True, text=True
    ).stdout.split("\n")[:2]
    assert arn.endswith(":assumed-role/pixfleet-orchestrator/pixfleet-orchestrator")
    assert outcome == "refused AccessDenied"  # IAM is enforced: the orchestrator may not touch objects
