"""The API service behind HAProxy on the embedded stack: real tasks, real load balancer, real emulator.

Two API tasks on dynamic host ports behind the edge; uploads through the edge reach both;
a rolling deploy under a steady load fails no request; a killed task fails only what it was
serving, and the load balancer stops sending it traffic. Every wait is for the state
expected, with a generous deadline; nothing asserts a duration. The load balancer's own
rules (path rules to a second target group, the down-marking within interval × threshold)
are pinned against real HAProxy in test_lb_haproxy.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from pixfleet.bench.lb import GROUP, SteadyLoad, deploy_phase, small_jpeg
from pixfleet.stack import EmbeddedConfig, EmbeddedStack
from services.orchestrator.lb.haproxy import available

pytestmark = pytest.mark.asyncio(loop_scope="session")

if available() is None:  # .ci/run installs it; a missing haproxy is a broken environment, not a skip
    pytest.fail("haproxy is not installed (apt-get install haproxy)", pytrace=False)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedStack]:
    config = EmbeddedConfig(state_dir=tmp_path_factory.mktemp("lb"), workers=1, max_workers=1, api_port=0)
    async with EmbeddedStack(config) as stack:
        yield stack


async def upload(http: aiohttp.ClientSession, api: str, body: bytes) -> int:
    async with http.post(f"{api}/v1/images?preset=thumbs", data=body, headers={"Content-Type": "image/jpeg"}) as r:
        await r.read()
        return r.status


async def wait_for(predicate: Any, what: str, timeout: float = 120.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.2)


async def in_service(stack: EmbeddedStack, count: int = 2) -> bool:
    api = (await stack.services())["api"]
    (lb,) = api["loadBalancers"]
    healthy = [d for d in lb["targetHealthDescriptions"] if d["TargetHealth"]["State"] == "healthy"]
    return api["steady"] and len(api["deployments"]) == 1 and len(healthy) == count == api["runningCount"]


async def test_two_api_tasks_on_dynamic_ports_both_receive_traffic(stack: EmbeddedStack) -> None:
    assert stack.load_balancer is not None
    assert stack.api_url == f"http://127.0.0.1:{stack.load_balancer.address()[1]}"  # the edge
    tasks = await stack.tasks("api")
    ports = {b["hostPort"] for t in tasks for b in t["networkBindings"]}
    assert len(tasks) == 2 and len(ports) == 2 and stack.load_balancer.address()[1] not in ports
    api = (await stack.services())["api"]
    (lb,) = api["loadBalancers"]
    assert lb["containerName"] == "api" and lb["containerPort"] == 8080
    assert {d["Target"]["Id"] for d in lb["targetHealthDescriptions"]} == {t["taskId"] for t in tasks}
    assert {d["Target"]["Port"] for d in lb["targetHealthDescriptions"]} == ports

    before = {k: v.total for k, v in (await stack.load_balancer.server_stats(GROUP)).items()}
    body = small_jpeg()
    async with aiohttp.ClientSession() as http:
        statuses = [await upload(http, stack.api_url, body) for _ in range(40)]
    assert statuses == [202] * 40
    after = {k: v.total for k, v in (await stack.load_balancer.server_stats(GROUP)).items()}
    counts = [after[t["taskId"]] - before.get(t["taskId"], 0) for t in tasks]
    assert sum(counts) == 40 and min(counts) >= 16  # round robin: within ±20 % of 20 each


async def test_a_rolling_deploy_under_load_fails_no_request(stack: EmbeddedStack) -> None:
    await wait_for(lambda: in_service(stack), "two API tasks in service")
    load = SteadyLoad(stack.api_url, rate=10, body=small_jpeg())
    runner = asyncio.create_task(load.run())
    try:
        await wait_for(lambda: _answered(load, 10), "the load running")
        result = await deploy_phase(stack, load, timeout=180)
    finally:
        load.stop()
        await runner
    failed = [o for o in load.outcomes if o.failed]
    assert len(load.outcomes) >= 10 and failed == [], failed[:5]
    tasks = await stack.tasks("api")
    assert {t["taskDefinition"] for t in tasks} == {result["revision"]}


async def test_a_killed_task_fails_only_its_in_flight_requests_and_leaves_the_target_group(
    stack: EmbeddedStack,
) -> None:
    balancer = stack.load_balancer
    assert balancer is not None
    await wait_for(lambda: in_service(stack), "two API tasks in service")
    load = SteadyLoad(stack.api_url, rate=10, body=small_jpeg())
    runner = asyncio.create_task(load.run())
    try:
        await wait_for(lambda: _answered(load, 10), "the load running")
        victim = (await stack.tasks("api"))[0]["taskId"]
        at_kill = len(load.outcomes)
        kill_started = time.time()
        await stack.control.kill_task(victim)
        killed = time.time()  # the orchestrator sent SIGKILL before it answered

        async def out_of_service() -> bool:
            stat = (await balancer.server_stats(GROUP)).get(victim)
            return stat is None or not stat.status.startswith("UP")

        await wait_for(out_of_service, "the killed task out of the load balancer's rotation")

        async def replaced() -> bool:
            return victim not in {t["taskId"] for t in await stack.tasks("api")} and await in_service(stack)

        await wait_for(replaced, "a replacement task in service", timeout=180)
        await wait_for(lambda: _answered(load, at_kill + 20), "twenty more answers")
    finally:
        load.stop()
        await runner
    after = [o for o in load.outcomes if o.started >= killed]
    assert len(after) >= 20 and [o for o in after if o.failed] == []  # every request sent after the kill succeeded
    # the only failures: requests open at the kill (the killed task's in-flight ones)
    assert all(o.started < killed and o.ended > kill_started for o in load.outcomes if o.failed)


async def _answered(load: SteadyLoad, count: int) -> bool:
    return len(load.outcomes) >= count


async def test_describe_services_shows_the_load_balancer(stack: EmbeddedStack) -> None:
    """ECS's DescribeServices (boto3, signed with the admin keys) names the API's target group binding."""
    import boto3

    from services.orchestrator.awsapi.endpoint import admin_signer

    signer = admin_signer(stack.admin_token, "000000000000")
    ecs = boto3.client(
        "ecs",
        region_name=stack.aws.region,
        endpoint_url=stack.orchestrator_url,
        aws_access_key_id=signer.access_key_id,
        aws_secret_access_key=signer.secret_access_key,
    )
    (api,) = (await asyncio.to_thread(ecs.describe_services, cluster="pixfleet", services=["api"]))["services"]
    (binding,) = api["loadBalancers"]
    assert binding["containerName"] == "api" and binding["containerPort"] == 8080
    assert binding["targetGroupArn"].startswith("arn:aws:elasticloadbalancing:")
