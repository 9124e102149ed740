"""``python -m services.deadletter`` — run the dead-letter recorder; ``--healthcheck`` probes a running one."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys


async def _run() -> int:
    from pipeline.settings import SettingsError
    from services.deadletter.settings import DeadLetterSettings
    from services.deadletter.recorder import DeadLetterRecorder

    try:
        settings = DeadLetterSettings.from_env()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    recorder = DeadLetterRecorder(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, recorder.stop)
    return await recorder.main()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m services.deadletter")
    parser.add_argument("--healthcheck", action="store_true", help="probe the running recorder's health endpoint")
    args = parser.parse_args()
    if args.healthcheck:
        from services.healthcheck import probe

        return probe("PIXFLEET_DEADLETTER_HEALTH_HOST", "PIXFLEET_DEADLETTER_HEALTH_PORT", None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s deadletter %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_run())


if __name__ == "__main__":
    sys.exit(main())
