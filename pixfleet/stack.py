"""The embedded default stack: ``pixfleet up`` with no Docker.

It starts moto's server on loopback, provisions the stack and switches IAM
enforcement on. Then it starts the **orchestrator** as its own process, with only
the orchestrator role's credentials (served, ECS-style, from a loopback
endpoint here); the orchestrator runs the API and worker services as task
processes, each with only its own role. ``.pixfleet/stack.json`` tells scripts
and tests where everything is.

When ``haproxy`` is on PATH, the stack also runs the load balancer (HAProxy, a process
it owns, described by ``infra/ecs/loadbalancing.json``) as the edge on the API port, and
the API service runs two tasks on dynamic host ports behind it; the orchestrator
registers and drains them through HAProxy's runtime API. Without haproxy the API is one
task on the API port, and the start-up log says so once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from infra.credentials import assume_role
from infra.emulator import ORCHESTRATOR_SESSION_NAME, MotoServer, start_provisioned_emulator
from pipeline.net import free_port
from infra.provision import StackOutputs
from infra.stack import StackSpec
from infra import ECS_DIR, LOADBALANCING_FILE, TASKDEFS_DIR
from infra.ecs_apply import Description, apply_to
from pipeline.settings import AwsSettings
from pixfleet.endpoints import stack_path
from pixfleet.orchestrator_client import OrchestratorClient
from pixfleet.processes import ProcessRecord
from services.orchestrator.credentials import CredentialVault, credentials_routes
from services.orchestrator.lb.haproxy import HAProxyLoadBalancer, available
from services.orchestrator.lb.spec import LoadBalancerSpec
from services.orchestrator.process_runtime import ProcessRuntime
from services.orchestrator.runtime import LaunchSpec, TaskHandle

log = logging.getLogger("pixfleet.embedded")

SHIPPED_TASKDEFS = TASKDEFS_DIR
SHIPPED_ECS = ECS_DIR
SHIPPED_LOADBALANCING = LOADBALANCING_FILE


@dataclass
class EmbeddedConfig:
    """What ``pixfleet up`` starts."""

    state_dir: Path = Path(".pixfleet")
    workers: int = 1
    max_workers: int | None = 4
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    region: str = "us-east-1"
    spec: StackSpec = field(default_factory=StackSpec)
    api_env: dict[str, str] = field(default_factory=dict)
    worker_env: dict[str, str] = field(default_factory=dict)
    deadletter_env: dict[str, str] = field(default_factory=dict)
    # The worker's target tracking, in PutScalingPolicy's TargetTrackingScalingPolicyConfiguration words
    # (``TargetValue``, ``ScaleInCooldown``, ``ScaleOutCooldown``, ``DisableScaleIn``) over infra/ecs/scaling.
    scaling: dict[str, Any] = field(default_factory=dict)
    autoscaling: bool = True  # False: no scalable target for the worker (register one through the API)
    orchestrator_env: dict[str, str] = field(default_factory=dict)
    # HAProxy as the edge on api_port, with api_tasks API tasks on dynamic ports behind it.
    # None: when haproxy is installed (on PATH, or /usr/sbin/haproxy); without it, one API task on api_port.
    load_balancer: bool | None = None
    api_tasks: int | None = None  # None: 2 behind the load balancer, else 1

    @property
    def balanced(self) -> bool:
        return available() is not None if self.load_balancer is None else self.load_balancer


def _set_env(container: dict[str, Any], values: dict[str, str]) -> None:
    env = {e["name"]: e["value"] for e in container.get("environment", [])}
    env.update(values)
    container["environment"] = [{"name": k, "value": v} for k, v in env.items()]


class EmbeddedStack:
    """Emulator + provisioned stack + the orchestrator process, which runs the services."""

    def __init__(self, config: EmbeddedConfig):
        self.config = config
        self.state_dir = config.state_dir
        self.emulator: MotoServer | None = None
        self.outputs: StackOutputs | None = None
        self.bootstrap: dict[str, str] = {}
        self.api_url = ""
        self.orchestrator_url = ""
        self.admin_token = secrets.token_urlsafe(24)
        self.orchestrator: TaskHandle | None = None
        self._orchestrator_port = 0
        self._vault: CredentialVault | None = None
        self._credentials_url = ""
        self._runner: web.AppRunner | None = None
        self.runtime = ProcessRuntime(config.state_dir / "logs")
        self.owner = ProcessRecord.current()
        self.load_balancer: HAProxyLoadBalancer | None = None
        self._edge_port = 0
        self.applied: list[str] = []  # what the start-up's apply step did, one line per call that changed something

    # --- start / stop ----------------------------------------------------------------------

    async def start(self, timeout: float = 90.0) -> None:
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.emulator, self.outputs, self.bootstrap = await start_provisioned_emulator(
            cfg.state_dir / "logs", cfg.region, cfg.spec
        )
        where = f"port {cfg.api_port}" if cfg.api_port else "a free port"
        if cfg.balanced:
            self._edge_port = cfg.api_port or free_port()
        elif cfg.load_balancer is None:  # the default, and haproxy is missing: say so once
            log.warning(
                "no load balancer: haproxy is not installed (apt-get install haproxy), so the API is one task on %s",
                where,
            )
        else:
            log.info("no load balancer (turned off): the API is one task on %s", where)
        self._write_service_config()
        if cfg.balanced:
            await self._start_load_balancer()
        await self._start_credentials_endpoint()
        self._orchestrator_port = free_port()
        self.orchestrator_url = f"http://127.0.0.1:{self._orchestrator_port}"
        await self.start_orchestrator()
        await self.apply()
        await self.wait_steady(timeout)
        self.write_stack_json()

    async def stop(self, timeout: float = 60.0) -> None:
        await self.stop_orchestrator(timeout)
        if self.load_balancer is not None:  # after the orchestrator: it drained the API tasks through it
            await self.load_balancer.close()
            self.load_balancer = None
        if self._runner:
            await self._runner.cleanup()
            self._runner = None
        if self.emulator:
            await asyncio.to_thread(self.emulator.stop)
        with suppress(FileNotFoundError):
            stack_path(self.state_dir).unlink()

    async def __aenter__(self) -> EmbeddedStack:
        try:
            await self.start()
        except BaseException:
            await self.stop(timeout=10)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- configuration ---------------------------------------------------------------------

    def description(self) -> Description:
        """The shipped description (infra/ecs, infra/taskdefs) with this stack's ports, counts and scaling."""
        cfg = self.config
        description = Description.load(SHIPPED_ECS, SHIPPED_TASKDEFS)
        container = description.task_definition("pixfleet-api")["containerDefinitions"][0]
        for mapping in container["portMappings"]:
            if mapping["containerPort"] == 8080:
                mapping.pop("hostPort", None)
                if cfg.api_port and not cfg.balanced:  # behind the load balancer: dynamic host ports
                    mapping["hostPort"] = cfg.api_port
        _set_env(container, {"PIXFLEET_API_HOST": cfg.api_host, **cfg.api_env})
        # The queue's visibility and maxReceiveCount: the worker reads them from the queue.
        _set_env(description.task_definition("pixfleet-worker")["containerDefinitions"][0], cfg.worker_env)
        _set_env(description.task_definition("pixfleet-deadletter")["containerDefinitions"][0], cfg.deadletter_env)
        api = description.service("api")
        api["desiredCount"] = cfg.api_tasks or (2 if cfg.balanced else 1)
        if not cfg.balanced:
            api.pop("loadBalancers", None)
        description.service("worker")["desiredCount"] = cfg.workers
        description.set_scaling(
            "worker",
            minimum=cfg.workers,
            maximum=max(cfg.workers, cfg.max_workers or cfg.workers),
            policy=cfg.scaling,
        )
        if not cfg.autoscaling:
            description.scaling.clear()
        if self.outputs is not None:  # the metric math names this stack's queue
            description.name_queue(self.outputs.queue_url.rstrip("/").rsplit("/", 1)[-1])
        return description

    def _write_service_config(self) -> None:
        """What this stack applies, as files (``config/ecs``, ``config/taskdefs``), and its load balancer."""
        cfg = self.config
        self.description().write(self.state_dir / "config" / "ecs", self.state_dir / "config" / "taskdefs")
        if cfg.balanced:  # the shipped description, its listener on this stack's edge port
            description = json.loads(SHIPPED_LOADBALANCING.read_text())
            for listener in description["listeners"].values():
                listener["Port"] = self._edge_port
            (self.state_dir / "config" / "loadbalancing.json").write_text(json.dumps(description, indent=2))

    async def apply(self) -> None:
        """Apply ``config/`` through the control plane's ECS and Application Auto Scaling APIs."""
        folder = self.state_dir / "config"
        description = Description.load(folder / "ecs", folder / "taskdefs")
        keys = {
            "aws_access_key_id": self.bootstrap["access_key_id"],
            "aws_secret_access_key": self.bootstrap["secret_access_key"],
        }
        assert self.outputs is not None

        def say(line: str) -> None:
            self.applied.append(line)
            log.info("apply: %s", line)

        await asyncio.to_thread(apply_to, self.orchestrator_url, self.outputs.region, keys, description, say)

    async def _start_load_balancer(self) -> None:
        """HAProxy, owned by this stack (it outlives orchestrator restarts); the orchestrator drives it."""
        spec = LoadBalancerSpec.load(self.state_dir / "config" / "loadbalancing.json")
        self.load_balancer = HAProxyLoadBalancer(spec, self.state_dir / "lb", bind_host=self.config.api_host)
        await self.load_balancer.start()
        log.info("load balancer: HAProxy (pid %s) on %s:%d", self.load_balancer.pid, *self.load_balancer.address())

    @property
    def aws(self) -> AwsSettings:
        assert self.outputs and self.emulator
        return AwsSettings(
            endpoint_url=self.emulator.url,
            region=self.outputs.region,
            input_bucket=self.outputs.input_bucket,
            output_bucket=self.outputs.output_bucket,
            queue_url=self.outputs.queue_url,
            dlq_url=self.outputs.dlq_url,
        )

    # --- the orchestrator process --------------------------------------------------------------

    async def _start_credentials_endpoint(self) -> None:
        """The orchestrator's own role, served like an instance's: assumed with the bootstrap keys."""
        assert self.emulator and self.outputs
        url, region, bootstrap = self.emulator.url, self.outputs.region, self.bootstrap

        async def assume(role_arn: str, session_name: str) -> Any:
            return await assume_role(url, region, bootstrap, role_arn, session_name, duration_seconds=3600)

        self._vault = CredentialVault(assume)
        app = web.Application()
        app.add_routes(credentials_routes(self._vault))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self._credentials_url = f"http://127.0.0.1:{port}"

    async def start_orchestrator(self) -> None:
        """Start (or restart, adopting running tasks) the orchestrator process."""
        assert self._vault and self.outputs
        token = self._vault.register(ORCHESTRATOR_SESSION_NAME, self.outputs.role_arns["orchestrator"])
        env = {
            **self.aws.env(),
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{self._credentials_url}/v1/credentials/{ORCHESTRATOR_SESSION_NAME}",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": token,
            "PIXFLEET_ORCH_STATE_DIR": str((self.state_dir / "orchestrator").resolve()),
            "PIXFLEET_ORCH_PORT": str(self._orchestrator_port),
            "PIXFLEET_ORCH_ADMIN_TOKEN": self.admin_token,
            # `aws ecs` with the same keys as `aws s3` (pixfleet env): the control plane verifies, never uses them
            "PIXFLEET_ORCH_ADMIN_ACCESS_KEY_ID": self.bootstrap["access_key_id"],
            "PIXFLEET_ORCH_ADMIN_SECRET_ACCESS_KEY": self.bootstrap["secret_access_key"],
            **self._load_balancer_env(),
            **self.config.orchestrator_env,
        }
        spec = LaunchSpec(
            task_id=f"orchestrator-{int(time.time())}",
            cluster="pixfleet",
            service=None,
            family="pixfleet-orchestrator",
            revision=1,
            command=("python", "-m", "services.orchestrator"),
            image="",
            environment={},
            port_mappings=(),
            cpu_units=0,
            memory_mib=0,
        )
        self.orchestrator = await self.runtime.start(spec, lambda ports: env)
        await self._wait_healthy(self.orchestrator)
        if stack_path(self.state_dir).exists():  # a restart: stack.json names the new orchestrator process
            self.write_stack_json()

    def _load_balancer_env(self) -> dict[str, str]:
        if self.load_balancer is None:
            return {}
        return {
            "PIXFLEET_LB_FILE": str((self.state_dir / "config" / "loadbalancing.json").resolve()),
            "PIXFLEET_LB_RUNTIME_API": str(self.load_balancer.paths.socket),
        }

    async def stop_orchestrator(self, timeout: float = 60.0) -> int | None:
        """SIGTERM the orchestrator; it drains and stops its tasks (its stop timeout covers theirs)."""
        if self.orchestrator is None:
            return None
        code = await self.runtime.stop(self.orchestrator, timeout)
        self.orchestrator = None
        return code

    def kill_orchestrator(self) -> None:
        """SIGKILL only the orchestrator process (not its tasks): a crash, for adoption drills."""
        assert self.orchestrator is not None and self.orchestrator.pid is not None
        os.kill(self.orchestrator.pid, signal.SIGKILL)

    async def _wait_healthy(self, handle: TaskHandle, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        control = self.control
        while not await control.healthy():
            if not await self.runtime.alive(handle):
                tail = Path(handle.log or "").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the orchestrator exited:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the orchestrator at {self.orchestrator_url} not up after {timeout:.0f}s")
            await asyncio.sleep(0.1)

    # --- talking to the orchestrator ---------------------------------------------------------

    @property
    def control(self) -> OrchestratorClient:
        """The control plane's ECS and Application Auto Scaling APIs, with the admin token's key pair."""
        region = self.outputs.region if self.outputs else self.config.region
        return OrchestratorClient(self.orchestrator_url, self.admin_token, region=region)

    async def services(self) -> dict[str, dict[str, Any]]:
        return {s["serviceName"]: s for s in await self.control.services()}

    async def tasks(self, service: str | None = None, status: str | None = "RUNNING") -> list[dict[str, Any]]:
        return await self.control.tasks(service, status)

    async def wait_steady(self, timeout: float = 90.0) -> None:
        """Until every service is steady (desired count of healthy primary tasks); then learn the API's URL."""
        deadline = time.monotonic() + timeout
        while True:
            if self.orchestrator is None or not await self.runtime.alive(self.orchestrator):
                raise RuntimeError("the orchestrator is not running")
            services = await self.services()
            if services and all(s["steady"] for s in services.values()):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"services not steady after {timeout:.0f}s: {services}; logs in {self.state_dir}")
            await asyncio.sleep(0.2)
        if self.load_balancer is not None:  # the edge: the load balancer's listener
            self.api_url = f"http://{self.config.api_host}:{self._edge_port}"
            return
        (api,) = await self.tasks("api")
        port = next(b["hostPort"] for b in api["networkBindings"] if b["containerPort"] == 8080)
        self.api_url = f"http://{self.config.api_host}:{port}"

    # --- discovery ---------------------------------------------------------------------------

    def stack_info(self) -> dict[str, Any]:
        """The keys of ``.pixfleet/stack.json``."""
        assert self.outputs and self.emulator
        return {
            "api_url": self.api_url,
            "aws_endpoint_url": self.emulator.url,
            "region": self.outputs.region,
            "input_bucket": self.outputs.input_bucket,
            "output_bucket": self.outputs.output_bucket,
            "queue_url": self.outputs.queue_url,
            "dlq_url": self.outputs.dlq_url,
            "role_arns": dict(self.outputs.role_arns),
            "bootstrap_credentials": {
                "access_key_id": self.bootstrap["access_key_id"],
                "secret_access_key": self.bootstrap["secret_access_key"],
            },
            "orchestrator_url": self.orchestrator_url,
            "ecs_endpoint_url": self.orchestrator_url,  # ECS and Application Auto Scaling (AWS JSON 1.1 on POST /)
            "orchestrator_token": self.admin_token,
            "logs": str((self.state_dir / "logs").resolve()),
            "task_logs": str((self.state_dir / "orchestrator" / "logs").resolve()),
            "taskdefs": str((self.state_dir / "config" / "taskdefs").resolve()),
            # who owns the stack (`pixfleet down` signals it) and its orchestrator (stopped if the owner died)
            "process": self.owner.to_json(),
            "load_balancer": None
            if self.load_balancer is None
            else {"pid": self.load_balancer.pid, "runtime_api": str(self.load_balancer.paths.socket)},
            "orchestrator_process": None
            if self.orchestrator is None
            else {"pid": self.orchestrator.pid, "task_id": self.orchestrator.task_id},
        }

    def write_stack_json(self) -> Path:
        path = stack_path(self.state_dir)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the admin token
        with open(fd, "w") as f:
            f.write(json.dumps(self.stack_info(), indent=2) + "\n")
        return path
