"""``python -m services.worker`` — run one worker; ``--healthcheck`` probes a running one."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys


async def _run() -> int:
    from pipeline.settings import SettingsError
    from services.worker.settings import WorkerSettings
    from services.worker.worker import Worker

    try:
        settings = WorkerSettings.from_env()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    worker = Worker(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    return await worker.main()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m services.worker")
    parser.add_argument(
        "--healthcheck", action="store_true", help="probe the running worker's health endpoint (exit 0 when healthy)"
    )
    args = parser.parse_args()
    if args.healthcheck:
        from services.healthcheck import probe

        return probe("PIXFLEET_WORKER_HEALTH_HOST", "PIXFLEET_WORKER_HEALTH_PORT", None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_run())


if __name__ == "__main__":
    sys.exit(main())
