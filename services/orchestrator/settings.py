"""Settings of the orchestrator process (the control plane), read once from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from infra import LOADBALANCING_FILE, TASK_IMAGE_VARIABLES
from pipeline.settings import AwsSettings, ServiceSettings, env


class OrchestratorSettings(ServiceSettings):
    """Settings of the orchestrator process (the control plane)."""

    aws: AwsSettings
    cluster: str = env("PIXFLEET_CLUSTER", "pixfleet")
    state_dir: str = env("PIXFLEET_ORCH_STATE_DIR", ".pixfleet/orchestrator")
    # A description to apply once the API listens (``ecs/`` and ``taskdefs/`` inside, infra/'s layout), through
    # the ECS and Application Auto Scaling calls a user would make: the compose stack's deploy step. Empty: none
    # (the embedded stack applies from ``pixfleet up``; anyone may apply with boto3 or ``aws ecs``).
    apply_dir: str = env("PIXFLEET_ORCH_APPLY", "")
    host: str = env("PIXFLEET_ORCH_HOST", "127.0.0.1")
    port: int = env("PIXFLEET_ORCH_PORT", 8090, ge=0, le=65535)
    task_endpoint_url: str = env("PIXFLEET_ORCH_TASK_ENDPOINT", "")
    runtime: Literal["process", "docker"] = env("PIXFLEET_RUNTIME", "process")
    stop_tasks_on_exit: bool = env("PIXFLEET_ORCH_STOP_TASKS_ON_EXIT", True)
    tick_interval: float = env("PIXFLEET_ORCH_TICK", 0.5, ge=0.05, le=60)
    admin_token: str = env("PIXFLEET_ORCH_ADMIN_TOKEN", "")
    # A second admin key pair the control plane accepts (the embedded stack's emulator admin keys, so that
    # `eval "$(pixfleet env)"` makes `aws s3` and `aws ecs` work with the same credentials). Never a task's.
    admin_access_key_id: str = env("PIXFLEET_ORCH_ADMIN_ACCESS_KEY_ID", "")
    admin_secret_access_key: str = env("PIXFLEET_ORCH_ADMIN_SECRET_ACCESS_KEY", "")
    instance_cpu: int = env("PIXFLEET_INSTANCE_CPU", 0, ge=0)  # 0: cpu_count × 1024 × capacity.CPU_SHARES
    instance_memory: int = env("PIXFLEET_INSTANCE_MEMORY", 0, ge=0)  # MiB; 0: the machine's RAM
    validate_responses: bool = env("PIXFLEET_ORCH_VALIDATE_RESPONSES", False)  # check answers against botocore
    docker_task_network: str = env("PIXFLEET_DOCKER_TASK_NETWORK", "pixfleet_tasks")
    docker_edge_network: str = env("PIXFLEET_DOCKER_EDGE_NETWORK", "pixfleet_edge")
    # The load balancer the orchestrator drives (it never starts one): its description and runtime API,
    # a Unix socket path or host:port (compose: the LB container's stats socket). Empty: no load balancer.
    lb_file: str = env("PIXFLEET_LB_FILE", str(LOADBALANCING_FILE))
    lb_runtime_api: str = env("PIXFLEET_LB_RUNTIME_API", "")
    api_image: str = env("PIXFLEET_API_IMAGE", "")
    worker_image: str = env("PIXFLEET_WORKER_IMAGE", "")  # runs the dead-letter recorder too

    @property
    def endpoint_for_tasks(self) -> str:
        """How tasks reach the credentials and metadata endpoints."""
        return self.task_endpoint_url or f"http://{self.host}:{self.port}"

    @property
    def lb_address(self) -> Path | tuple[str, int] | None:
        """``PIXFLEET_LB_RUNTIME_API`` as a socket path or a (host, port)."""
        text = self.lb_runtime_api
        if not text:
            return None
        host, _, port = text.rpartition(":")
        if "/" not in text and host and port.isdigit():
            return host, int(port)
        return Path(text)

    @property
    def task_images(self) -> tuple[tuple[str, str], ...]:
        """Task definition family → the image this deployment runs it with (where one is set)."""
        by_variable = {"PIXFLEET_API_IMAGE": self.api_image, "PIXFLEET_WORKER_IMAGE": self.worker_image}
        images = ((family, by_variable[variable]) for family, variable in TASK_IMAGE_VARIABLES.items())
        return tuple((family, image) for family, image in images if image)
