"""Where the running stack is, for the tools that talk to it (``load``, ``demo``).

* the embedded stack writes ``stack.json`` in its state directory (``pixfleet up``);
* the compose stack publishes its API address as ``PIXFLEET_API_URL``, in the
  environment or in the ``.env`` file next to ``docker-compose.yml``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEFAULT_COMPOSE_API_URL = "http://127.0.0.1:8080"


def state_dir() -> Path:
    return Path(os.environ.get("PIXFLEET_STATE_DIR", ".pixfleet"))


def read_stack(folder: Path | None = None) -> dict[str, Any] | None:
    """The embedded stack's ``stack.json``, or None when there is none."""
    path = (folder or state_dir()) / "stack.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a dotenv file (comments, blank lines, ``export`` and quotes allowed)."""
    values: dict[str, str] = {}
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return values
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def compose_api_url(env_file: Path = Path(".env")) -> str:
    """The compose stack's API: ``$PIXFLEET_API_URL``, else ``.env``'s, else the published default."""
    return (
        os.environ.get("PIXFLEET_API_URL") or read_env_file(env_file).get("PIXFLEET_API_URL") or DEFAULT_COMPOSE_API_URL
    ).rstrip("/")
