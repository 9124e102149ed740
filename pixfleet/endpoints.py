"""Where the running stack is, for every tool that talks to it — the one reader of ``stack.json``.

* the embedded stack writes ``stack.json`` in its state directory (``pixfleet up``; ``$PIXFLEET_STATE_DIR``,
  default ``.pixfleet``): its URLs, the emulator's bootstrap keys, the orchestrator's admin token, and
  ``process`` — the pid and start time of the process that owns the stack, which ``pixfleet down``
  signals. A ``stack.json`` whose process is gone (killed, machine rebooted) is *stale*:
  :func:`require_stack` refuses it with a message saying so.
* the compose stack publishes its API address as ``PIXFLEET_API_URL``, in the
  environment or in the ``.env`` file next to ``docker-compose.yml``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from pixfleet.processes import ProcessRecord

DEFAULT_COMPOSE_API_URL = "http://127.0.0.1:8080"
STACK_FILE = "stack.json"


class NoRunningStack(click.ClickException):
    """No ``stack.json``, or one whose process is gone: a message naming the file and what to do."""


def state_dir() -> Path:
    return Path(os.environ.get("PIXFLEET_STATE_DIR", ".pixfleet"))


def stack_path(folder: Path | None = None) -> Path:
    return (folder or state_dir()) / STACK_FILE


def read_stack(folder: Path | None = None) -> dict[str, Any] | None:
    """The embedded stack's ``stack.json``, or None when there is none (or it is not JSON)."""
    try:
        doc = json.loads(stack_path(folder).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def stack_process(stack: dict[str, Any]) -> ProcessRecord | None:
    """The process that owns the stack (None for a ``stack.json`` written before it was recorded)."""
    return ProcessRecord.from_json(stack.get("process"))


def is_stale(stack: dict[str, Any]) -> bool:
    """The recorded owner of the stack is no longer running."""
    process = stack_process(stack)
    return process is not None and not process.alive()


def require_stack(folder: Path | None = None, *, instead: str = "") -> dict[str, Any]:
    """The running stack's ``stack.json``, or :class:`NoRunningStack` (``instead``: the option that avoids it)."""
    path = stack_path(folder)
    alternative = f", or pass {instead}" if instead else ""
    stack = read_stack(folder)
    if stack is None:
        raise NoRunningStack(f"no running stack: {path} not found (start one with `pixfleet up`{alternative})")
    process = stack_process(stack)
    if process is not None and not process.alive():
        raise NoRunningStack(
            f"no running stack: {path} is stale — the process that wrote it ({process.describe()}) is gone. "
            f"`pixfleet down` cleans up after it, `pixfleet up` starts a new one{alternative}."
        )
    return stack


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
