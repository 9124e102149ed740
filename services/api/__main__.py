"""``python -m services.api`` — run the upload API with settings from the environment.

``--healthcheck`` probes a running one."""

from __future__ import annotations

import argparse
import logging
import sys


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m services.api")
    parser.add_argument(
        "--healthcheck", action="store_true", help="probe the running API's /healthz (exit 0 when healthy)"
    )
    args = parser.parse_args()
    if args.healthcheck:
        from services.healthcheck import probe

        return probe("PIXFLEET_API_HOST", "PIXFLEET_API_PORT", 8080)

    from aiohttp import web

    from pipeline.settings import SettingsError
    from services.api.settings import ApiSettings
    from services.api.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s api %(levelname)s %(name)s: %(message)s")
    try:
        settings = ApiSettings.from_env()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    web.run_app(create_app(settings), host=settings.host, port=settings.port, print=None, shutdown_timeout=8)
    return 0


if __name__ == "__main__":
    sys.exit(main())
