"""``python -m services.api`` — run the upload API with settings from the environment."""

from __future__ import annotations

import logging
import sys

from aiohttp import web

from pipeline.settings import ApiSettings, SettingsError
from services.api.app import create_app


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s api %(levelname)s %(name)s: %(message)s")
    try:
        settings = ApiSettings.from_env()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    web.run_app(create_app(settings), host=settings.host, port=settings.port, print=None, shutdown_timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
