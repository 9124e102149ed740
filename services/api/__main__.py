"""``python -m services.api`` — run the upload API with settings from the environment; ``--healthcheck`` probes a running one."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import urllib.error
import urllib.request

from aiohttp import web

from pipeline.settings import ApiSettings, EnvReader, SettingsError
from services.api.app import create_app


def healthcheck(env: EnvReader) -> int:
    """Exit 0 when the API's ``/healthz`` answers 200 (usable as a container HEALTHCHECK).

    Reads only PIXFLEET_API_HOST/PORT: unlike ``ApiSettings.from_env`` it needs no queue URL.
    """
    host = env.str("PIXFLEET_API_HOST", "127.0.0.1")
    port = env.int("PIXFLEET_API_PORT", 8080, min=1, max=65535)
    if env.problems:
        print(SettingsError(env.problems), file=sys.stderr)
        return 1
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # a wildcard bind is probed on loopback
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            print(json.dumps(json.load(response)))
            return 0
    except urllib.error.HTTPError as exc:  # 503: the body says which dependency is down
        print(exc.read().decode(errors="replace"))
        print(f"unhealthy: HTTP {exc.code}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m services.api")
    parser.add_argument("--healthcheck", action="store_true", help="probe the running API's /healthz")
    args = parser.parse_args()
    if args.healthcheck:
        return healthcheck(EnvReader())
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
