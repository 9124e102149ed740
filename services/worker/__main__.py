"""``python -m services.worker`` — run one worker; ``--healthcheck`` probes a running one."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import urllib.request

from pipeline.settings import SettingsError, WorkerSettings
from services.worker.worker import Worker


async def _run(settings: WorkerSettings) -> int:
    worker = Worker(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    return await worker.main()


def healthcheck(settings: WorkerSettings) -> int:
    """Exit 0 when the worker's health endpoint says ok (usable as a container HEALTHCHECK)."""
    if settings.health_port is None:
        print("PIXFLEET_WORKER_HEALTH_PORT is not set", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(f"http://{settings.health_host}:{settings.health_port}/healthz", timeout=3) as r:
            print(json.dumps(json.load(r)))
            return 0
    except Exception as exc:  # noqa: BLE001
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m services.worker")
    parser.add_argument("--healthcheck", action="store_true", help="probe the running worker's health endpoint")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(name)s: %(message)s")
    try:
        settings = WorkerSettings.from_env()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.healthcheck:
        return healthcheck(settings)
    return asyncio.run(_run(settings))


if __name__ == "__main__":
    sys.exit(main())
