"""A CloudTrail-like trail of every control-plane call, kept across restarts.

Each call becomes one JSON line in ``audit.jsonl`` (in the orchestrator's state directory) in the shape of a
CloudTrail management event: ``eventTime``, ``eventSource`` (``ecs.amazonaws.com``,
``application-autoscaling.amazonaws.com``), ``eventName``, ``userIdentity`` (from the request's signature),
``requestParameters`` with secrets hidden as CloudTrail hides them, ``errorCode`` / ``errorMessage`` for a
refused call, ``readOnly``, ``requestID`` and ``eventID``. Calls refused before their signature was checked
are recorded too (``userIdentity`` then says what the request claimed).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS"
_SECRET_NAME = re.compile(r"secret|password|passwd|token|credential|private|api[_-]?key|access[_-]?key", re.IGNORECASE)
_READ_ONLY = ("Describe", "List", "Get")


def redact(value: Any) -> Any:
    """Request parameters with secrets hidden: values of secret-looking keys, and of environment variables
    (``{"name", "value"}`` pairs) with secret-looking names."""
    if isinstance(value, dict):
        if (
            set(value) >= {"name", "value"}
            and isinstance(value.get("name"), str)
            and _SECRET_NAME.search(value["name"])
        ):
            return {**value, "value": HIDDEN}
        return {k: HIDDEN if _SECRET_NAME.search(k) and isinstance(v, str) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


class AuditLog:
    """Append-only JSON lines; the newest ``keep`` events are also held in memory for reading."""

    def __init__(self, path: Path | None, keep: int = 5000):
        self.path = path
        self._events: deque[dict[str, Any]] = deque(maxlen=keep)
        self._lock = threading.Lock()
        if path is not None and path.exists():
            for line in path.read_text(errors="replace").splitlines()[-keep:]:
                try:
                    self._events.append(json.loads(line))
                except ValueError:
                    continue

    def record(
        self,
        *,
        source: str,
        action: str,
        region: str,
        identity: dict[str, Any],
        parameters: Any,
        request_id: str,
        source_ip: str | None,
        user_agent: str | None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "eventVersion": "1.09",
            "eventTime": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "eventSource": source,
            "eventName": action,
            "awsRegion": region,
            "sourceIPAddress": source_ip,
            "userAgent": user_agent,
            "userIdentity": identity,
            "requestParameters": redact(parameters) if parameters else None,
            "requestID": request_id,
            "eventID": str(uuid.uuid4()),
            "readOnly": action.startswith(_READ_ONLY),
            "eventType": "AwsApiCall",
        }
        if error_code:
            event["errorCode"] = error_code
            event["errorMessage"] = error_message
        with self._lock:
            self._events.append(event)
            if self.path is not None:
                with self.path.open("a") as out:
                    out.write(json.dumps(event, default=str) + "\n")
        return event

    def newest_first(
        self, limit: int = 50, action: str | None = None, source: str | None = None
    ) -> Iterator[dict[str, Any]]:
        with self._lock:
            events = list(self._events)
        count = 0
        for event in reversed(events):
            if (action is None or event["eventName"] == action) and (
                source is None or event["eventSource"].startswith(source)
            ):
                yield event
                count += 1
                if count >= limit:
                    return
