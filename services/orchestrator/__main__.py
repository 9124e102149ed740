"""``python -m services.orchestrator`` — run the control plane with settings from the environment."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
from contextlib import AsyncExitStack, suppress
from pathlib import Path

from aiobotocore.session import get_session
from aiohttp import web

from infra.credentials import assume_role_with
from infra.ecs_apply import Description, apply_to
from infra.stack import TASK_ROLE_KEYS, StackSpec, role_arn
from pipeline.aws import client_config
from pipeline.settings import SettingsError
from services.orchestrator.api import create_orchestrator_app
from services.orchestrator.awsapi.ecs import EcsControlPlane
from services.orchestrator.awsapi.endpoint import admin_signer, aws_tables, create_aws_endpoint
from services.orchestrator.awsapi.signing import Signer
from services.orchestrator.capacity import registered
from services.orchestrator.awsapi.autoscaling import ApplicationAutoScaling
from services.orchestrator.credentials import CredentialVault
from services.orchestrator.lb.haproxy import HAProxyLoadBalancer
from services.orchestrator.lb.spec import LoadBalancerSpec
from services.orchestrator.metric_sources import SqsQueueDepth
from services.orchestrator.orchestrator import Orchestrator
from services.orchestrator.runtime import create_runtime
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.taskdefs import TaskDefinitionRegistry, resolve_role_arn

log = logging.getLogger("pixfleet.orchestrator")


def _admin_token(settings: OrchestratorSettings, state_dir: Path) -> str:
    if settings.admin_token:
        return settings.admin_token
    path = state_dir / "admin-token"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24))
    return path.read_text().strip()


async def _load_balancer(settings: OrchestratorSettings, state_dir: Path) -> HAProxyLoadBalancer | None:
    """Attach to the stack's load balancer, if it has one (services name its target groups in CreateService)."""
    address = settings.lb_address
    if address is None:
        log.info("no load balancer (PIXFLEET_LB_RUNTIME_API unset): CreateService refuses loadBalancers")
        return None
    spec = LoadBalancerSpec.load(Path(settings.lb_file))
    balancer = HAProxyLoadBalancer(spec, state_dir / "lb", runtime_api=address)
    await balancer.attach(timeout=60)
    log.info("load balancer: HAProxy's runtime API at %s", settings.lb_runtime_api)
    return balancer


async def _apply(folder: Path, url: str, signer: Signer, region: str) -> None:
    """Apply the description in ``folder`` through this control plane's own API, as a user's boto3 would."""
    keys = {"aws_access_key_id": signer.access_key_id, "aws_secret_access_key": signer.secret_access_key}
    description = Description.load(folder / "ecs", folder / "taskdefs")
    await asyncio.to_thread(apply_to, url, region, keys, description, lambda line: log.info("apply: %s", line))


async def serve(settings: OrchestratorSettings) -> int:
    state_dir = Path(settings.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    session = get_session()
    aws = settings.aws
    async with AsyncExitStack() as stack:
        config = client_config(timeout=3, read_timeout=10, attempts=2)
        sts = await stack.enter_async_context(
            session.create_client("sts", region_name=aws.region, endpoint_url=aws.endpoint_url, config=config)
        )
        sqs = await stack.enter_async_context(
            session.create_client("sqs", region_name=aws.region, endpoint_url=aws.endpoint_url, config=config)
        )
        identity = await sts.get_caller_identity()
        account, partition = identity["Account"], identity["Arn"].split(":")[1]
        # The roles tasks may have: the stack's task roles (never the orchestrator's own).
        names = StackSpec().role_names()
        task_roles = {key: role_arn(partition, account, names[key]) for key in TASK_ROLE_KEYS}

        registry = TaskDefinitionRegistry(state_dir / "taskdefs.json")
        load_balancer = await _load_balancer(settings, state_dir)
        orchestrator = Orchestrator(
            cluster=settings.cluster,
            registry=registry,
            services=[],  # the services are ECS's, created through the API (and kept in ecs.json)
            runtime=create_runtime(
                settings.runtime,
                log_dir=state_dir / "logs",
                cluster=settings.cluster,
                task_network=settings.docker_task_network,
                edge_network=settings.docker_edge_network,
                images=dict(settings.task_images),
            ),
            vault=CredentialVault(lambda arn, session_name: assume_role_with(sts, arn, session_name)),
            metric_source=SqsQueueDepth(sqs, aws.queue_url, aws.dlq_url or None),
            state_dir=state_dir,
            task_env=aws.env(),
            endpoint_url=settings.endpoint_for_tasks,
            role_arn=lambda value: resolve_role_arn(value, task_roles),
            tick_interval=settings.tick_interval,
            capacity=registered(settings.instance_cpu, settings.instance_memory),
            load_balancer=load_balancer,
        )
        admin_token = _admin_token(settings, state_dir)
        autoscaling = ApplicationAutoScaling(
            orchestrator,
            queue_names={aws.queue_url.rstrip("/").rsplit("/", 1)[-1]},
            region=aws.region,
            account=account,
            state_dir=state_dir,
        )
        ecs = EcsControlPlane(orchestrator, region=aws.region, account=account, state_path=state_dir / "ecs.json")
        admin = admin_signer(admin_token, account)
        signers = [admin]
        if settings.admin_access_key_id and settings.admin_secret_access_key:
            signers.append(
                Signer(
                    settings.admin_access_key_id,
                    settings.admin_secret_access_key,
                    f"arn:aws:iam::{account}:user/pixfleet-bootstrap",
                )
            )
        aws_api = create_aws_endpoint(
            aws_tables(orchestrator, ecs, autoscaling),
            signers,
            region=aws.region,
            state_dir=state_dir,
            task_key=orchestrator.vault.role_of_key,
            validate_responses=settings.validate_responses,
        )
        runner = web.AppRunner(create_orchestrator_app(orchestrator, aws_api), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, settings.host, settings.port).start()
        stack.push_async_callback(runner.cleanup)
        log.info("orchestrator API on http://%s:%d", settings.host, settings.port)
        await orchestrator.start()
        autoscaling.apply_saved()  # before the control loop's first tick (start() only scheduled it)
        if settings.apply_dir:
            await _apply(Path(settings.apply_dir), f"http://127.0.0.1:{settings.port}", admin, aws.region)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        async def refresh_credentials() -> None:
            while True:
                await asyncio.sleep(60)
                await orchestrator.vault.refresh_due()

        refresher = asyncio.create_task(refresh_credentials(), name="credential refresher")
        await stop.wait()
        refresher.cancel()
        with suppress(asyncio.CancelledError):
            await refresher
        log.info("shutting down (stop tasks: %s)", settings.stop_tasks_on_exit)
        await orchestrator.close(stop_tasks=settings.stop_tasks_on_exit)
    return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s orchestrator %(levelname)s %(name)s: %(message)s")
    try:
        settings = OrchestratorSettings.from_env()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
