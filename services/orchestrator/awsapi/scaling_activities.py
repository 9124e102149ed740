"""Application Auto Scaling's scaling activities: what the scaler did (or could not do), kept across restarts.

:class:`ActivityLog` holds the newest activities in memory and appends each new one, and each change of one
(``InProgress`` → ``Successful``), to a JSON-lines file; on load the last line of an ``ActivityId`` wins. The
file is rewritten from memory once it has grown past twice what is kept, so it stays bounded.
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Any

from services.orchestrator.scaling import Decision, ScalingPolicy

KEEP_ACTIVITIES = 1000


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` whole (written beside it, then renamed): a crash leaves the old text or the new."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class ActivityLog:
    """Scaling activities, newest last in memory; appended to a JSON-lines file (a later line with the same
    ``ActivityId`` updates an earlier one) that is rewritten from memory when it grows past twice ``keep``."""

    def __init__(self, path: Path | None, keep: int = KEEP_ACTIVITIES):
        self.path = path
        self.keep = keep
        self._activities: dict[str, dict[str, Any]] = {}
        self._lines = 0
        self._lock = threading.Lock()
        if path is not None and path.exists():
            for line in path.read_text(errors="replace").splitlines():
                try:
                    activity = json.loads(line)
                    self._activities[activity["ActivityId"]] = activity
                except (ValueError, KeyError, TypeError):
                    continue
                self._lines += 1
            self._trim()

    def _trim(self) -> None:
        while len(self._activities) > self.keep:
            del self._activities[next(iter(self._activities))]

    def put(self, activity: dict[str, Any]) -> dict[str, Any]:
        """Record a new activity, or the new state of one already recorded (same ``ActivityId``)."""
        with self._lock:
            self._activities[activity["ActivityId"]] = activity
            self._trim()
            if self.path is None:
                return activity
            if self._lines >= 2 * self.keep:
                write_atomically(self.path, "".join(json.dumps(a) + "\n" for a in self._activities.values()))
                self._lines = len(self._activities)
            else:
                with self.path.open("a") as out:
                    out.write(json.dumps(activity) + "\n")
                self._lines += 1
        return activity

    def newest_first(self, resource: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            activities = list(self._activities.values())
        return [a for a in reversed(activities) if resource is None or a["ResourceId"] == resource]

    def in_progress(self, resource: str) -> list[dict[str, Any]]:
        return [a for a in self.newest_first(resource) if a["StatusCode"] == "InProgress"]


def clamp_message(policy: ScalingPolicy, decision: Decision) -> str | None:
    """What the scaler's ceiling (or floor) did to the demand of a decision, in AWS's words; ``None`` if nothing."""
    if decision.backlog is None:
        return None
    wanted = math.ceil(decision.backlog / policy.target(None))
    if wanted > policy.max and decision.desired == policy.max:
        return f"Reached the maximum capacity of {policy.max} tasks: the backlog asks for {wanted}."
    if wanted < policy.min and decision.desired == policy.min:
        return f"Reached the minimum capacity of {policy.min} tasks: the backlog asks for {wanted}."
    return None
