"""The load balancer's data plane against a real HAProxy and real backends (processes).

Health checks use ELBv2's smallest interval (5 s) with thresholds of 2, so a target is
healthy about 10 s after registration and a dead one is marked down within 10 s. Every
wait polls the runtime API for the state it expects, with a generous deadline.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.orchestrator.lb.haproxy import HAProxyLoadBalancer, InvalidTargetError, LoadBalancerStartError, available
from services.orchestrator.lb.spec import LoadBalancerConfigError, LoadBalancerSpec, TargetGroupNotFoundError
from pipeline.net import free_port

INTERVAL, HEALTHY, UNHEALTHY = 5, 2, 2
BACKEND = Path(__file__).with_name("lb_backend.py")
TG_ARN = "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/{}/0123456789abcdef"
LB_ARN = "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/pixfleet/0123456789abcdef"
LISTENER = "arn:aws:elasticloadbalancing:us-east-1:000000000000:listener/app/pixfleet/0123456789abcdef/fedcba9876543210"

if available() is None:  # .ci/run installs it; a missing haproxy is a broken environment, not a skip
    pytest.fail("haproxy is not installed (apt-get install haproxy)", pytrace=False)


def target_group(name: str, delay: int = 30) -> dict[str, Any]:
    return {
        "Name": name,
        "Protocol": "HTTP",
        "Port": 8080,
        "TargetType": "instance",
        "HealthCheckPath": "/health",
        "HealthCheckIntervalSeconds": INTERVAL,
        "HealthCheckTimeoutSeconds": 2,
        "HealthyThresholdCount": HEALTHY,
        "UnhealthyThresholdCount": UNHEALTHY,
        "Matcher": {"HttpCode": "200"},
        "TargetGroupAttributes": [{"Key": "deregistration_delay.timeout_seconds", "Value": str(delay)}],
    }


def rule(priority: int, patterns: list[str], group: str) -> dict[str, Any]:
    return {
        "ListenerArn": LISTENER,
        "Priority": priority,
        "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": patterns}}],
        "Actions": [{"Type": "forward", "TargetGroupArn": TG_ARN.format(group)}],
    }


def spec(port: int, groups: list[str], rules: list[dict[str, Any]] | None = None) -> LoadBalancerSpec:
    listener = {
        "LoadBalancerArn": LB_ARN,
        "Protocol": "HTTP",
        "Port": port,
        "DefaultActions": [{"Type": "forward", "TargetGroupArn": TG_ARN.format(groups[0])}],
    }
    return LoadBalancerSpec.from_requests([target_group(g) for g in groups], {LISTENER: listener}, rules or [])


# --- fixtures: backends and load balancers, closed at teardown -----------------------------------


@dataclass
class Backend:
    name: str
    port: int
    process: subprocess.Popen[str]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def backend() -> Iterator[Callable[[str], Backend]]:
    started: list[Backend] = []

    def start(name: str) -> Backend:
        process = subprocess.Popen(
            [sys.executable, str(BACKEND), name], stdout=subprocess.PIPE, text=True, cwd=BACKEND.parent
        )
        assert process.stdout is not None
        line = process.stdout.readline()  # the port, once it listens
        assert line.strip().isdigit(), f"backend {name} did not start"
        started.append(Backend(name, int(line), process))
        return started[-1]

    yield start
    for b in started:
        if b.process.poll() is None:
            b.kill()


@pytest.fixture
async def load_balancer(tmp_path: Path) -> AsyncIterator[Callable[[LoadBalancerSpec], Awaitable[HAProxyLoadBalancer]]]:
    started: list[HAProxyLoadBalancer] = []

    async def start(lb_spec: LoadBalancerSpec) -> HAProxyLoadBalancer:
        lb = HAProxyLoadBalancer(lb_spec, tmp_path / f"lb{len(started)}")
        started.append(lb)
        await lb.start()
        return lb

    yield start
    for lb in started:
        await lb.close()


# --- helpers -------------------------------------------------------------------------------------


async def until(check: Callable[[], Awaitable[Any]], what: str, deadline_s: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {deadline_s:.0f} s: {what}")
        await asyncio.sleep(0.1)


async def states(lb: HAProxyLoadBalancer, group: str) -> dict[str, str]:
    return {t["id"]: t["state"] for t in await lb.target_health(group)}


async def all_healthy(lb: HAProxyLoadBalancer, group: str, ids: set[str]) -> None:
    async def check() -> bool:
        return await states(lb, group) == dict.fromkeys(ids, "healthy")

    await until(check, f"{sorted(ids)} healthy in {group}", deadline_s=INTERVAL * (HEALTHY + 4))


async def worker_pid(lb: HAProxyLoadBalancer) -> str:
    """The serving process's pid: a reload would change it, a runtime-API command does not."""
    info = await lb.api.execute("show info")
    return next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("Pid:"))


@dataclass
class Load:
    """Requests sent by a few concurrent clients with keep-alive, like a browser's or a load test's."""

    url: str
    concurrency: int = 8
    served: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, total: int | None = None) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

            async def client() -> None:
                while not self.stop.is_set() and (total is None or self.sent < total):
                    self.sent += 1
                    try:
                        async with session.get(self.url) as response:
                            body = await response.text()
                            if response.status == 200:
                                self.served[body] += 1
                            else:
                                self.errors.append(f"{response.status} {body[:60]}")
                    except aiohttp.ClientError as exc:
                        self.errors.append(repr(exc))

            await asyncio.gather(*(client() for _ in range(self.concurrency)))

    sent: int = 0


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


# --- the tests -----------------------------------------------------------------------------------


async def test_two_targets_share_the_traffic_within_twenty_percent(load_balancer, backend) -> None:
    a, b = backend("A"), backend("B")
    lb = await load_balancer(spec(free_port(), ["api"]))
    host, port = lb.address()
    await lb.register("api", "task-a", "127.0.0.1", a.port)
    await lb.register(TG_ARN.format("api"), "task-b", "127.0.0.1", b.port)  # by ARN as well as by name
    health = await lb.target_health("api")
    assert [(t["state"], t["reason"]) for t in health] == [("initial", "Elb.InitialHealthChecking")] * 2
    status, _ = await get(f"http://{host}:{port}/")
    assert status == 503  # no target has passed its health checks yet: none gets a request
    await all_healthy(lb, "api", {"task-a", "task-b"})

    load = Load(f"http://{host}:{port}/")
    await load.run(total=600)
    print(f"\nspread over two targets: {dict(load.served)}, errors: {len(load.errors)}")
    assert load.errors == []
    assert set(load.served) == {"A", "B"}
    for count in load.served.values():
        assert abs(count - 300) <= 60, load.served  # ±20 % of an even share


async def test_a_killed_target_is_marked_down_in_time_and_clients_see_only_its_in_flight_fail(
    load_balancer, backend
) -> None:
    a, b = backend("A"), backend("B")
    lb = await load_balancer(spec(free_port(), ["api"]))
    host, port = lb.address()
    await lb.register("api", "task-a", "127.0.0.1", a.port)
    await lb.register("api", "task-b", "127.0.0.1", b.port)
    await all_healthy(lb, "api", {"task-a", "task-b"})

    load = Load(f"http://{host}:{port}/")
    running = asyncio.create_task(load.run())

    async def both_serving() -> bool:
        return load.served["A"] >= 50 and load.served["B"] >= 50

    await until(both_serving, "both targets serving under load", deadline_s=30)
    b.kill()
    killed_at, served_b = time.monotonic(), load.served["B"]

    async def b_down() -> dict[str, Any] | None:
        health = {t["id"]: t for t in await lb.target_health("api")}
        return health["task-b"] if health["task-b"]["state"] == "unhealthy" else None

    down = await until(b_down, "task-b unhealthy", deadline_s=60)
    marked_down_after = time.monotonic() - killed_at
    after_down = sum(load.served.values())

    async def more_served() -> bool:
        return sum(load.served.values()) >= after_down + 200

    await until(more_served, "200 more requests served after the mark-down", deadline_s=30)
    load.stop.set()
    await running
    print(
        f"\nkilled target marked down after {marked_down_after:.1f} s (bound {INTERVAL * UNHEALTHY} s); "
        f"served {dict(load.served)}, B after the kill: {load.served['B'] - served_b}, "
        f"failed: {len(load.errors)} {load.errors[:4]}"
    )
    assert down["reason"] == "Target.FailedHealthChecks"
    assert marked_down_after <= INTERVAL * UNHEALTHY + 1.5  # + the poll and the check's own latency
    # What may fail is what was in flight on B when it died: at most one request per client.
    assert len(load.errors) <= load.concurrency, load.errors
    assert load.served["A"] > after_down // 2


async def test_drain_sends_no_new_requests_and_lets_in_flight_ones_finish(load_balancer, backend) -> None:
    a, b = backend("A"), backend("B")
    lb = await load_balancer(spec(free_port(), ["api"]))
    host, port = lb.address()
    pid = await worker_pid(lb)
    await lb.register("api", "task-a", "127.0.0.1", a.port)
    await lb.register("api", "task-b", "127.0.0.1", b.port)
    await all_healthy(lb, "api", {"task-a", "task-b"})

    slow = [asyncio.create_task(get(f"http://{host}:{port}/slow?ms=3000")) for _ in range(4)]

    async def b_busy() -> bool:
        stats = await lb.server_stats("api")
        return stats["task-b"].sessions >= 1 and stats["task-a"].sessions + stats["task-b"].sessions == 4

    await until(b_busy, "slow requests in flight on both targets", deadline_s=10)
    started = time.monotonic()
    deregistering = asyncio.create_task(lb.deregister("api", "task-b"))  # the group's delay: 30 s

    async def draining() -> bool:
        return (await states(lb, "api")).get("task-b") == "draining"

    await until(draining, "task-b draining", deadline_s=10)
    fast = Load(f"http://{host}:{port}/", concurrency=4)
    await fast.run(total=60)
    assert fast.served == Counter({"A": 60}) and fast.errors == []

    results = await asyncio.gather(*slow)
    assert [status for status, _ in results] == [200] * 4
    assert Counter(body for _, body in results) == Counter({"A": 2, "B": 2})  # B finished its in-flight ones
    await asyncio.wait_for(deregistering, timeout=25)
    print(f"\nderegistration took {time.monotonic() - started:.1f} s (delay 30 s, in-flight requests 3 s)")
    assert time.monotonic() - started < 20  # done when B's sessions were, not at the delay
    assert await states(lb, "api") == {"task-a": "healthy"}
    assert await worker_pid(lb) == pid  # never restarted, never reloaded


async def test_path_rules_route_by_priority_and_change_at_runtime(load_balancer, backend) -> None:
    a, c = backend("A"), backend("C")
    rules = [rule(10, ["/v2/*"], "v2"), rule(5, ["/v2/admin*"], "api")]
    lb = await load_balancer(spec(free_port(), ["api", "v2"], rules))
    host, port = lb.address()
    pid = await worker_pid(lb)
    await lb.register("api", "task-a", "127.0.0.1", a.port)
    await lb.register("v2", "task-c", "127.0.0.1", c.port)
    await all_healthy(lb, "api", {"task-a"})
    await all_healthy(lb, "v2", {"task-c"})

    async def routes(paths: list[str]) -> dict[str, str]:
        return {path: (await get(f"http://{host}:{port}{path}"))[1] for path in paths}

    paths = ["/", "/v2", "/v2/", "/v2/images?x=1", "/v2/admin/users", "/V2/images", "/v3/a", "/v3/ab"]
    assert await routes(paths) == {
        "/": "A",
        "/v2": "A",  # /v2/* needs the slash
        "/v2/": "C",
        "/v2/images?x=1": "C",  # the query string is not part of the path
        "/v2/admin/users": "A",  # priority 5 wins over priority 10
        "/V2/images": "A",  # case-sensitive
        "/v3/a": "A",
        "/v3/ab": "A",
    }

    await lb.set_rules(LISTENER, [rule(1, ["/v2/*"], "v2"), rule(2, ["/v3/?"], "v2")])
    assert await routes(paths) == {
        "/": "A",
        "/v2": "A",
        "/v2/": "C",
        "/v2/images?x=1": "C",
        "/v2/admin/users": "C",  # the admin rule is gone
        "/V2/images": "A",
        "/v3/a": "C",  # ? is one character
        "/v3/ab": "A",
    }
    assert await lb.rules_in_effect() == [("^/v2/.*$", "v2"), ("^/v3/.$", "v2")]
    assert lb.paths.rules_map(lb.spec.listener()).read_text() == "^/v2/.*$ v2\n^/v3/.$ v2\n"
    assert await worker_pid(lb) == pid

    with pytest.raises(LoadBalancerConfigError, match="TargetGroupNotFound"):
        await lb.set_rules(LISTENER, [rule(1, ["/x/*"], "nope")])
    with pytest.raises(LoadBalancerConfigError, match="ListenerArn"):
        await lb.set_rules(LISTENER, [{**rule(1, ["/x/*"], "v2"), "ListenerArn": "another"}])
    assert await lb.rules_in_effect() == [("^/v2/.*$", "v2"), ("^/v3/.$", "v2")]  # a refused change changes nothing


async def test_target_health_in_elbv2_states_and_reasons(load_balancer, backend) -> None:
    a, spare = backend("A"), backend("S")
    lb = await load_balancer(spec(free_port(), ["api"]))
    nobody = free_port()
    await lb.register("api", "task-a", "127.0.0.1", a.port)
    await lb.register("api", "task-x", "127.0.0.1", nobody)  # nothing listens there
    assert await states(lb, "api") == {"task-a": "initial", "task-x": "initial"}

    async def settled() -> dict[str, Any] | None:
        health = {t["id"]: t for t in await lb.target_health("api")}
        done = health["task-a"]["state"] == "healthy" and health["task-x"]["state"] == "unhealthy"
        return health if done else None

    health = await until(settled, "task-a healthy and task-x unhealthy", deadline_s=INTERVAL * (HEALTHY + 4))
    assert (health["task-x"]["reason"], health["task-x"]["port"]) == ("Target.FailedHealthChecks", nobody)

    async with aiohttp.ClientSession() as session:
        await session.post(f"http://127.0.0.1:{a.port}/control/health?status=503")

    async def mismatch() -> dict[str, Any] | None:
        health = {t["id"]: t for t in await lb.target_health("api")}
        return health["task-a"] if health["task-a"]["state"] == "unhealthy" else None

    found = await until(mismatch, "task-a unhealthy on 503", deadline_s=INTERVAL * (UNHEALTHY + 4))
    assert found["reason"] == "Target.ResponseCodeMismatch"
    assert found["description"] == "Health checks failed with these codes: [503]"

    # The same id on a new port: moved (set server … addr … port …), checked again from scratch.
    await lb.register("api", "task-x", "127.0.0.1", spare.port)
    assert (await states(lb, "api"))["task-x"] == "initial"

    async def moved_healthy() -> bool:
        return (await states(lb, "api"))["task-x"] == "healthy"

    await until(moved_healthy, "task-x healthy on its new port", deadline_s=INTERVAL * (HEALTHY + 4))
    assert (await lb.target_health("api"))[1]["port"] == spare.port

    await lb.deregister("api", "task-a", drain_seconds=0)
    assert await states(lb, "api") == {"task-x": "healthy"}
    with pytest.raises(InvalidTargetError, match="not registered"):
        await lb.deregister("api", "task-a")
    with pytest.raises(InvalidTargetError, match="not an IP address"):
        await lb.register("api", "task-y", "localhost", 80)
    with pytest.raises(InvalidTargetError, match="id"):
        await lb.register("api", "task y", "127.0.0.1", 80)
    with pytest.raises(TargetGroupNotFoundError):
        await lb.target_health("nope")


async def test_haproxy_that_cannot_start_is_a_clear_error(load_balancer, tmp_path: Path) -> None:
    missing = HAProxyLoadBalancer(spec(free_port(), ["api"]), tmp_path / "missing", executable="/nonexistent/haproxy")
    with pytest.raises(LoadBalancerStartError, match="apt-get install haproxy"):
        await missing.start()
    with socket.socket() as taken:  # the listener's port is someone else's
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(LoadBalancerStartError, match="cannot bind socket"):
            await load_balancer(spec(taken.getsockname()[1], ["api"]))
