"""The orchestrator's memory across restarts: ``state.json``.

It holds each service's desired count, deployments and scaling limits, and every
task with its runtime handle and credentials token, so a restarted orchestrator
adopts the tasks that are still running instead of starting duplicates.

What is guaranteed: the file is replaced atomically (written beside it, then
renamed), so a crash leaves the old state or the new one, never half of either; it
is created with mode 0600, since the tokens in it open the tasks' credentials.
What is not: it is not a log — only the last save survives.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.orchestrator.model import Service, Task


@dataclass(frozen=True)
class SavedState:
    cluster: str
    services: dict[str, dict[str, Any]]  # service name → what :meth:`Service.restore` takes
    tasks: list[Task]


class StateStore:
    """``state.json`` of one orchestrator."""

    def __init__(self, path: Path):
        self.path = path

    def save(self, cluster: str, services: Iterable[Service], tasks: Iterable[Task]) -> None:
        state = {
            "cluster": cluster,
            "services": [s.to_state() for s in services],
            "tasks": [t.to_state() for t in tasks],
        }
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds task tokens
        os.fchmod(fd, 0o600)  # also when a crash left the temporary file behind with other bits
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
        tmp.replace(self.path)

    def load(self) -> SavedState | None:
        """The last saved state; ``None`` when there is none (a first start)."""
        if not self.path.exists():
            return None
        raw = json.loads(self.path.read_text())
        return SavedState(
            cluster=raw.get("cluster", ""),
            services={s["name"]: s for s in raw.get("services", [])},
            tasks=[Task.from_state(t) for t in raw.get("tasks", [])],
        )
