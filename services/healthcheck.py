"""A container HEALTHCHECK probe with nothing but the standard library.

Health checks run every few seconds per task, so they must start fast: this
module imports no aiohttp, botocore or Pillow (a full service import costs about
a second of CPU; this costs a few milliseconds).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request


def probe(host_var: str, port_var: str, default_port: int | None) -> int:
    """GET ``http://$host:$port/healthz``; print its JSON; exit status 0 only on 200."""
    host = os.environ.get(host_var) or "127.0.0.1"
    raw_port = os.environ.get(port_var) or (str(default_port) if default_port else "")
    if not raw_port.isdigit():
        print(f"unhealthy: {port_var}={raw_port!r} is not a port", file=sys.stderr)
        return 1
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # a wildcard bind is probed on loopback
    url = f"http://{f'[{host}]' if ':' in host else host}:{raw_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            print(json.dumps(json.load(response)))
            return 0
    except urllib.error.HTTPError as exc:  # 503: the body says what is wrong
        print(exc.read().decode(errors="replace"))
        print(f"unhealthy: HTTP {exc.code}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
