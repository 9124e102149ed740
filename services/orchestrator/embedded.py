"""The embedded default stack: ``pixfleet up`` with no Docker.

It starts moto's server on loopback, provisions the stack, switches IAM
enforcement on, serves per-task role credentials on a loopback credentials
endpoint, and runs the API and the workers as separate local processes — each
with only its own role's temporary credentials, never the bootstrap keys.
``.pixfleet/stack.json`` tells scripts and tests where everything is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from infra.credentials import assume_role
from infra.emulator import MotoServer, free_port, start_provisioned_emulator
from infra.provision import StackOutputs
from infra.stack import StackSpec
from pipeline.settings import AwsSettings
from services.orchestrator.credentials import CredentialVault, credentials_routes
from services.orchestrator.process_runtime import ProcessRuntime, ProcessTask

log = logging.getLogger("pixfleet.embedded")


@dataclass
class EmbeddedConfig:
    """What ``pixfleet up`` starts."""

    state_dir: Path = Path(".pixfleet")
    workers: int = 2
    worker_processes: int = 1
    worker_concurrency: int = 2
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    region: str = "us-east-1"
    spec: StackSpec = field(default_factory=StackSpec)
    api_env: dict[str, str] = field(default_factory=dict)
    worker_env: dict[str, str] = field(default_factory=dict)


@dataclass
class RunningTask:
    task: ProcessTask
    role: str
    health_url: str | None = None


class EmbeddedStack:
    """Emulator + provisioned stack + credentials endpoint + API and worker processes."""

    def __init__(self, config: EmbeddedConfig):
        self.config = config
        self.emulator: MotoServer | None = None
        self.outputs: StackOutputs | None = None
        self.bootstrap: dict[str, str] = {}
        self.vault: CredentialVault | None = None
        self.credentials_url = ""
        self.api_url = ""
        self.api: RunningTask | None = None
        self.workers: list[RunningTask] = []
        self._runner: web.AppRunner | None = None
        self.runtime = ProcessRuntime(config.state_dir / "logs")

    # --- start / stop ----------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.emulator, self.outputs, self.bootstrap = await start_provisioned_emulator(
            cfg.state_dir / "logs", cfg.region, cfg.spec
        )
        await self._start_credentials_endpoint()
        await self.start_api()
        await asyncio.gather(*(self.start_worker() for _ in range(cfg.workers)))
        self.write_stack_json()

    async def stop(self, timeout: float = 30.0) -> None:
        tasks = [t for t in [self.api, *self.workers] if t is not None]
        await asyncio.gather(*(self.stop_task(t, timeout) for t in tasks), return_exceptions=True)
        if self._runner:
            await self._runner.cleanup()
        if self.emulator:
            await asyncio.to_thread(self.emulator.stop)
        with suppress(FileNotFoundError):
            (self.config.state_dir / "stack.json").unlink()

    async def __aenter__(self) -> EmbeddedStack:
        try:
            await self.start()
        except BaseException:
            await self.stop(timeout=5)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- tasks -------------------------------------------------------------------------------

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

    def _task_env(self, task_id: str, role: str) -> dict[str, str]:
        assert self.vault and self.outputs
        token = self.vault.register(task_id, self.outputs.role_arns[role])
        return {
            **self.aws.env(),
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{self.credentials_url}/v1/credentials/{task_id}",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": token,
            "PIXFLEET_TASK_ID": task_id,
        }

    async def start_api(self) -> RunningTask:
        cfg = self.config
        task_id = uuid.uuid4().hex
        port = cfg.api_port or free_port(cfg.api_host)
        env = {
            **self._task_env(task_id, "api"),
            "PIXFLEET_API_HOST": cfg.api_host,
            "PIXFLEET_API_PORT": str(port),
            "PIXFLEET_MAX_RECEIVE_COUNT": str(cfg.spec.max_receive_count),
            **cfg.api_env,
        }
        process = await self.runtime.start(task_id, "api", ["python", "-m", "services.api"], env)
        self.api_url = f"http://{cfg.api_host}:{port}"
        self.api = RunningTask(process, "api", f"{self.api_url}/healthz")
        await self._wait_healthy(self.api)
        return self.api

    async def start_worker(self) -> RunningTask:
        cfg = self.config
        task_id = uuid.uuid4().hex
        port = free_port()
        env = {
            **self._task_env(task_id, "worker"),
            "PIXFLEET_WORKER_ID": f"worker-{task_id[:8]}",
            "PIXFLEET_WORKER_PROCESSES": str(cfg.worker_processes),
            "PIXFLEET_WORKER_CONCURRENCY": str(cfg.worker_concurrency),
            "PIXFLEET_WORKER_HEALTH_PORT": str(port),
            "PIXFLEET_VISIBILITY_TIMEOUT": str(cfg.spec.visibility_timeout),
            "PIXFLEET_MAX_RECEIVE_COUNT": str(cfg.spec.max_receive_count),
            **cfg.worker_env,
        }
        process = await self.runtime.start(task_id, "worker", ["python", "-m", "services.worker"], env)
        worker = RunningTask(process, "worker", f"http://127.0.0.1:{port}/healthz")
        self.workers.append(worker)
        await self._wait_healthy(worker)
        return worker

    async def stop_task(self, task: RunningTask, timeout: float = 30.0) -> int:
        code = await self.runtime.stop(task.task, timeout)
        assert self.vault
        self.vault.revoke(task.task.task_id)
        return code

    async def _wait_healthy(self, task: RunningTask, timeout: float = 60.0) -> None:
        """Poll the task's health endpoint until it answers 200 (or the process dies)."""
        assert task.health_url
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                if not task.task.running:
                    tail = task.task.log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{task.role} task exited with {task.task.process.returncode}:\n{tail}")
                with suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(task.health_url) as response:
                        if response.status == 200:
                            return
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"{task.role} task not healthy after {timeout:.0f}s (log: {task.task.log_path})")
                await asyncio.sleep(0.1)

    # --- credentials endpoint ----------------------------------------------------------------

    async def _start_credentials_endpoint(self) -> None:
        assert self.emulator and self.outputs
        url, region, bootstrap = self.emulator.url, self.outputs.region, self.bootstrap

        async def assume(role_arn: str, session_name: str) -> Any:
            return await assume_role(url, region, bootstrap, role_arn, session_name, duration_seconds=3600)

        self.vault = CredentialVault(assume)
        app = web.Application()
        app.add_routes(credentials_routes(self.vault))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.credentials_url = f"http://127.0.0.1:{port}"

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
            "credentials_url": self.credentials_url,
            "workers": len(self.workers),
            "logs": str(self.runtime.log_dir.resolve()),
        }

    def write_stack_json(self) -> Path:
        path = self.config.state_dir / "stack.json"
        path.write_text(json.dumps(self.stack_info(), indent=2) + "\n")
        return path
