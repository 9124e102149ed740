"""``python -m services.orchestrator.lb`` — run the load balancer on its own (the compose stack's ``lb``).

It renders ``haproxy.cfg`` from the description (``PIXFLEET_LB_FILE``, by default
``infra/ecs/loadbalancing.json``) into ``PIXFLEET_LB_RUN_DIR``, starts HAProxy with its
listeners on every interface of its container and its runtime API on a Unix socket in
that directory (a volume only the orchestrator shares: no task can reach it), and runs
until SIGTERM. It registers nothing itself: the orchestrator attaches to the socket and
registers the tasks. ``--healthcheck`` answers 0 once the runtime API does.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from infra import LOADBALANCING_FILE
from services.orchestrator.lb.haproxy import HAProxyLoadBalancer, LoadBalancerStartError
from services.orchestrator.lb.runtime_api import RuntimeAPI, RuntimeAPIError
from services.orchestrator.lb.spec import LoadBalancerConfigError, LoadBalancerSpec


def _paths() -> tuple[Path, Path]:
    run_dir = Path(os.environ.get("PIXFLEET_LB_RUN_DIR", "/run/pixfleet-lb"))
    return Path(os.environ.get("PIXFLEET_LB_FILE", str(LOADBALANCING_FILE))), run_dir


async def serve() -> int:
    description, run_dir = _paths()
    try:
        spec = LoadBalancerSpec.load(description)
    except LoadBalancerConfigError as exc:
        print(f"load balancer: {exc}", file=sys.stderr)
        return 2
    balancer = HAProxyLoadBalancer(spec, run_dir, bind_host=os.environ.get("PIXFLEET_LB_BIND", "0.0.0.0"))
    try:
        await balancer.start()
    except LoadBalancerStartError as exc:
        print(f"load balancer: {exc}", file=sys.stderr)
        return 1
    print(f"load balancer: HAProxy pid {balancer.pid}, runtime API {balancer.paths.socket}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    assert balancer.process is not None
    exited = asyncio.ensure_future(balancer.process.wait())
    await asyncio.wait([exited, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    code = 1 if exited.done() else 0
    await balancer.close()
    return code


async def healthcheck() -> int:
    _, run_dir = _paths()
    try:
        answer = await RuntimeAPI(run_dir / "haproxy.sock", timeout=3).execute("show info")
    except RuntimeAPIError as exc:
        print(exc)
        return 1
    return 0 if answer.startswith("Name: HAProxy") else 1


def main() -> int:
    return asyncio.run(healthcheck() if sys.argv[1:] == ["--healthcheck"] else serve())


if __name__ == "__main__":
    sys.exit(main())
