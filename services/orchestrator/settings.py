"""Settings of the orchestrator process (the control plane), read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from infra import SERVICES_FILE, TASKDEFS_DIR
from pipeline.settings import AwsSettings, EnvReader


@dataclass(frozen=True)
class OrchestratorSettings:
    """Settings of the orchestrator process (the control plane)."""

    aws: AwsSettings
    cluster: str = "pixfleet"
    state_dir: str = ".pixfleet/orchestrator"
    taskdefs_dir: str = str(TASKDEFS_DIR)
    services_file: str = str(SERVICES_FILE)
    host: str = "127.0.0.1"
    port: int = 8090
    task_endpoint_url: str = ""
    runtime: str = "process"
    stop_tasks_on_exit: bool = True
    tick_interval: float = 0.5
    admin_token: str = ""
    docker_task_network: str = "pixfleet_tasks"
    docker_edge_network: str = "pixfleet_edge"
    task_images: tuple[tuple[str, str], ...] = ()

    @property
    def endpoint_for_tasks(self) -> str:
        """How tasks reach the credentials and metadata endpoints."""
        return self.task_endpoint_url or f"http://{self.host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OrchestratorSettings:
        r = EnvReader(env)
        settings = cls(
            aws=AwsSettings.read(r),
            cluster=r.str("PIXFLEET_CLUSTER", "pixfleet"),
            state_dir=r.str("PIXFLEET_ORCH_STATE_DIR", ".pixfleet/orchestrator"),
            taskdefs_dir=r.str("PIXFLEET_TASKDEFS_DIR", str(TASKDEFS_DIR)),
            services_file=r.str("PIXFLEET_SERVICES_FILE", str(SERVICES_FILE)),
            host=r.str("PIXFLEET_ORCH_HOST", "127.0.0.1"),
            port=r.int("PIXFLEET_ORCH_PORT", 8090, min=0, max=65535),
            task_endpoint_url=r.str("PIXFLEET_ORCH_TASK_ENDPOINT", ""),
            runtime=r.str("PIXFLEET_RUNTIME", "process"),
            stop_tasks_on_exit=r.bool("PIXFLEET_ORCH_STOP_TASKS_ON_EXIT", True),
            tick_interval=r.float("PIXFLEET_ORCH_TICK", 0.5, min=0.05, max=60),
            admin_token=r.str("PIXFLEET_ORCH_ADMIN_TOKEN", ""),
            docker_task_network=r.str("PIXFLEET_DOCKER_TASK_NETWORK", "pixfleet_tasks"),
            docker_edge_network=r.str("PIXFLEET_DOCKER_EDGE_NETWORK", "pixfleet_edge"),
            task_images=tuple(
                (family, image)
                for family, image in (
                    ("pixfleet-api", r.str("PIXFLEET_API_IMAGE", "")),
                    ("pixfleet-worker", r.str("PIXFLEET_WORKER_IMAGE", "")),
                    ("pixfleet-deadletter", r.str("PIXFLEET_WORKER_IMAGE", "")),  # the worker image runs it
                )
                if image
            ),
        )
        r.check(
            settings.runtime in ("process", "docker"),
            f"PIXFLEET_RUNTIME={settings.runtime!r}: must be 'process' or 'docker'",
        )
        r.raise_if_problems()
        return settings
