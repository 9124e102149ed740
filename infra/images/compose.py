"""What the compose stack's control-plane containers run (``docker-compose.yml``).

``python -m infra.images.compose provision`` is the one-shot ``provision`` service. It
applies the stack to the emulator, then leaves two files in the ``stack`` volume, which
only it and the orchestrator mount (no task ever does):

* ``outputs.json`` — the stack's outputs (buckets, queue URLs, role ARNs);
* ``aws-config`` (mode 0600) — an AWS config file with the profile
  ``pixfleet-bootstrap`` (admin keys) and the profile ``pixfleet-orchestrator``, which
  assumes the orchestrator role with them. botocore does that assumption (and renews
  it) by itself when the orchestrator runs with ``AWS_PROFILE=pixfleet-orchestrator``.

On **moto** the admin keys belong to a user created while moto still accepts anything;
then IAM enforcement is switched on, and from there on the orchestrator can do only
what its role allows, and each task only what its own role allows. Run again against an
enforcing moto (``docker compose up`` a second time), it reuses the saved keys. On
**LocalStack** the admin keys are its test keys: its free edition checks no IAM.

``python -m infra.images.compose orchestrator`` reads ``outputs.json`` into the
environment, writes this deployment's task definitions (the shipped ones with the
images from ``PIXFLEET_API_IMAGE`` / ``PIXFLEET_WORKER_IMAGE``, and the API listening
on all interfaces: private behind the load balancer when ``PIXFLEET_LB_RUNTIME_API`` names
its runtime API, with ``PIXFLEET_API_TASKS`` tasks (2); else one task published on
``PIXFLEET_API_HOST_PORT``), then becomes ``python -m services.orchestrator``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices

from infra import ECS_DIR, TASK_IMAGE_VARIABLES, TASKDEFS_DIR
from infra.ecs_apply import Description
from pipeline.settings import ServiceSettings, SettingsError, env

STACK_DIR = "/var/lib/pixfleet/stack"
OUTPUTS_FILE = "outputs.json"
AWS_CONFIG_FILE = "aws-config"
BOOTSTRAP_PROFILE = "pixfleet-bootstrap"
ORCHESTRATOR_PROFILE = "pixfleet-orchestrator"
LOCALSTACK_KEYS = {"access_key_id": "test", "secret_access_key": "test"}
Emulator = Literal["localstack", "moto"]


class ProvisionSettings(ServiceSettings):
    """Settings of the provision container (the queue's two settings are the stack's: tasks read them back)."""

    endpoint_url: str = env("AWS_ENDPOINT_URL")
    region: str = env(AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"), "us-east-1")
    emulator: Emulator = env("PIXFLEET_EMULATOR", "localstack")
    stack_dir: Path = env("PIXFLEET_STACK_DIR", Path(STACK_DIR))
    max_receive_count: int = env("PIXFLEET_MAX_RECEIVE_COUNT", 3, ge=1, le=1000)
    visibility_timeout: int = env("PIXFLEET_VISIBILITY_TIMEOUT", 60, ge=5, le=43200)
    wait: float = env("PIXFLEET_EMULATOR_WAIT", 120.0, ge=0)


class DeploymentSettings(ServiceSettings):
    """Settings of the orchestrator container's start: where the stack's outputs are, what to write where."""

    stack_dir: Path = env("PIXFLEET_STACK_DIR", Path(STACK_DIR))
    state_dir: Path = env("PIXFLEET_ORCH_STATE_DIR", Path("/var/lib/pixfleet/orchestrator"))
    shipped_taskdefs: Path = env("PIXFLEET_SHIPPED_TASKDEFS_DIR", TASKDEFS_DIR)
    api_host_port: int = env("PIXFLEET_API_HOST_PORT", 8080, ge=1, le=65535)


# --- provision -------------------------------------------------------------------------------


def _sts_identity(endpoint_url: str, region: str, credentials: Mapping[str, str]) -> str | None:
    """The caller's ARN, or None when the emulator refuses these keys."""
    import botocore.session
    from botocore.exceptions import ClientError

    sts = botocore.session.get_session().create_client(
        "sts",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=credentials["access_key_id"],
        aws_secret_access_key=credentials["secret_access_key"],
    )
    try:
        return sts.get_caller_identity()["Arn"]
    except ClientError:
        return None
    finally:
        sts.close()


def _wait_for_emulator(settings: ProvisionSettings) -> None:
    """Until the endpoint answers HTTP at all (compose's health check usually did this already)."""
    deadline = time.monotonic() + settings.wait
    while True:
        try:
            urllib.request.urlopen(settings.endpoint_url, timeout=3).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError as exc:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"provision: {settings.endpoint_url} did not answer within {settings.wait:.0f}s: {exc}"
                ) from None
            time.sleep(1)


def _admin_credentials(settings: ProvisionSettings) -> tuple[dict[str, str], bool]:
    """The admin keys, and whether IAM enforcement must still be switched on."""
    from infra.credentials import EMULATOR_DUMMY_CREDENTIALS
    from infra.emulator import bootstrap_admin

    if settings.emulator == "localstack":
        return dict(LOCALSTACK_KEYS), False
    if _sts_identity(settings.endpoint_url, settings.region, EMULATOR_DUMMY_CREDENTIALS) is not None:
        return bootstrap_admin(settings.endpoint_url, settings.region), True  # a fresh moto: nothing enforced yet
    saved = _read_profile(settings.stack_dir / AWS_CONFIG_FILE, BOOTSTRAP_PROFILE)
    if saved and _sts_identity(settings.endpoint_url, settings.region, saved):
        return saved, False  # moto enforces IAM already, and these keys are its admin's
    raise SystemExit(
        "provision: moto enforces IAM already and the saved admin keys do not work; "
        "restart the emulator (docker compose down, then up)"
    )


def _read_profile(path: Path, profile: str) -> dict[str, str] | None:
    import configparser

    parser = configparser.ConfigParser()
    try:
        parser.read_string(path.read_text())
        section = parser[f"profile {profile}"]
        return {"access_key_id": section["aws_access_key_id"], "secret_access_key": section["aws_secret_access_key"]}
    except (OSError, KeyError, configparser.Error):
        return None


def aws_config(admin: Mapping[str, str], orchestrator_role_arn: str, session_name: str, region: str) -> str:
    """The orchestrator's AWS config file: admin keys, and its role assumed with them."""
    return (
        f"[profile {BOOTSTRAP_PROFILE}]\n"
        f"region = {region}\n"
        f"aws_access_key_id = {admin['access_key_id']}\n"
        f"aws_secret_access_key = {admin['secret_access_key']}\n"
        "\n"
        f"[profile {ORCHESTRATOR_PROFILE}]\n"
        f"region = {region}\n"
        f"source_profile = {BOOTSTRAP_PROFILE}\n"
        f"role_arn = {orchestrator_role_arn}\n"
        f"role_session_name = {session_name}\n"
        "duration_seconds = 3600\n"
    )


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def provision_main(settings: ProvisionSettings) -> int:
    from infra.emulator import ORCHESTRATOR_SESSION_NAME, EmulatorUnavailable, emulator_spec, enforce_iam
    from infra.provision import provision
    from infra.stack import StackSpec

    _wait_for_emulator(settings)
    admin, enforce = _admin_credentials(settings)
    spec = StackSpec(max_receive_count=settings.max_receive_count, visibility_timeout=settings.visibility_timeout)
    if settings.emulator == "moto":
        spec = emulator_spec(spec)  # moto matches trust principals literally (see infra.emulator)
    outputs = asyncio.run(provision(settings.endpoint_url, settings.region, spec, credentials=admin))
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    _write_private(
        settings.stack_dir / AWS_CONFIG_FILE,
        aws_config(admin, outputs.role_arns["orchestrator"], ORCHESTRATOR_SESSION_NAME, settings.region),
    )
    _write_private(settings.stack_dir / OUTPUTS_FILE, json.dumps(outputs.to_dict(), indent=2) + "\n")
    if enforce:
        try:
            enforce_iam(settings.endpoint_url)
        except EmulatorUnavailable as exc:
            raise SystemExit(f"provision: {exc}") from None
    print(
        f"provision: stack applied to {settings.emulator} at {settings.endpoint_url}"
        + (" (IAM enforced from now on)" if settings.emulator == "moto" else " (no IAM enforcement on LocalStack)"),
        flush=True,
    )
    print(json.dumps(outputs.to_dict(), indent=2), flush=True)
    return 0


# --- orchestrator ----------------------------------------------------------------------------


def orchestrator_environment(outputs: Mapping[str, Any]) -> dict[str, str]:
    """The stack's outputs as the orchestrator's settings variables (what it passes on to tasks)."""
    return {
        "AWS_REGION": outputs["region"],
        "AWS_DEFAULT_REGION": outputs["region"],
        "PIXFLEET_INPUT_BUCKET": outputs["input_bucket"],
        "PIXFLEET_OUTPUT_BUCKET": outputs["output_bucket"],
        "PIXFLEET_QUEUE_URL": outputs["queue_url"],
        "PIXFLEET_DLQ_URL": outputs["dlq_url"],
    }


def deployment_description(
    description: Description, env: Mapping[str, str], queue_name: str | None = None
) -> Description:
    """The shipped description (changed in place) for this deployment: its images, the API behind the load
    balancer or published itself, the worker's scaling from ``PIXFLEET_WORKERS_MIN`` etc., the stack's queue."""
    balanced = bool(env.get("PIXFLEET_LB_RUNTIME_API"))
    for doc in description.task_definitions:
        image = env.get(TASK_IMAGE_VARIABLES.get(doc.get("family", ""), ""), "")
        for container in doc.get("containerDefinitions", []):
            if image:
                container["image"] = image
            # No queue settings here: the workers read them from the queue the provision step made.
            if doc.get("family") == "pixfleet-api":
                variables = {e["name"]: e for e in container.get("environment", [])}
                variables["PIXFLEET_API_HOST"] = {"name": "PIXFLEET_API_HOST", "value": "0.0.0.0"}  # via Docker
                container["environment"] = list(variables.values())
                for mapping in container.get("portMappings", []):
                    if mapping.get("containerPort") == 8080:
                        mapping.pop("hostPort", None)  # behind the load balancer: private, on the tasks network
                        if not balanced:  # no load balancer: published itself
                            mapping["hostPort"] = int(env.get("PIXFLEET_API_HOST_PORT") or 8080)
    api = description.service("api")
    if balanced:
        api["desiredCount"] = int(env.get("PIXFLEET_API_TASKS") or 2)
    else:
        api.pop("loadBalancers", None)
        api["desiredCount"] = 1
    policy: dict[str, Any] = {}
    if env.get("PIXFLEET_SCALE_IN_COOLDOWN"):
        policy["ScaleInCooldown"] = int(float(env["PIXFLEET_SCALE_IN_COOLDOWN"]))
    if env.get("PIXFLEET_TARGET_BACKLOG"):
        policy["TargetValue"] = float(env["PIXFLEET_TARGET_BACKLOG"])
    description.set_scaling(
        "worker",
        minimum=int(env["PIXFLEET_WORKERS_MIN"]) if env.get("PIXFLEET_WORKERS_MIN") else None,
        maximum=int(env["PIXFLEET_WORKERS_MAX"]) if env.get("PIXFLEET_WORKERS_MAX") else None,
        policy=policy,
    )
    if queue_name:
        description.name_queue(queue_name)
    return description


def orchestrator_main(env: Mapping[str, str]) -> int:
    settings = DeploymentSettings.from_env(env)
    stack_dir, state_dir, shipped = settings.stack_dir, settings.state_dir, settings.shipped_taskdefs
    try:
        outputs = json.loads((stack_dir / OUTPUTS_FILE).read_text())
    except FileNotFoundError:
        print(f"orchestrator: {stack_dir / OUTPUTS_FILE} is missing: the provision step has not run", file=sys.stderr)
        return 2
    new_env = dict(env)
    new_env.update(orchestrator_environment(outputs))
    # What this deployment applies through the orchestrator's own ECS API once it listens (config/, to read).
    queue = str(outputs["queue_url"]).rstrip("/").rsplit("/", 1)[-1]
    description = deployment_description(Description.load(ECS_DIR, shipped), env, queue)
    description.write(state_dir / "config" / "ecs", state_dir / "config" / "taskdefs")
    new_env["PIXFLEET_ORCH_APPLY"] = str(state_dir / "config")
    os.execve(sys.executable, [sys.executable, "-m", "services.orchestrator"], new_env)
    return 0  # not reached


def main(argv: list[str]) -> int:
    if argv[:1] == ["provision"]:
        try:
            return provision_main(ProvisionSettings.from_env())
        except SettingsError as exc:
            print(exc, file=sys.stderr)
            return 2
    if argv[:1] == ["orchestrator"]:
        try:
            return orchestrator_main(os.environ)
        except SettingsError as exc:
            print(exc, file=sys.stderr)
            return 2
    print("usage: python -m infra.images.compose provision|orchestrator", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
