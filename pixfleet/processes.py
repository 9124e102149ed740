"""Is a recorded process still the one we recorded? (``stack.json`` names the process that owns a stack.)

A pid alone is not an identity: after a crash and a reboot, or simply much later, the number can
belong to another program. So a record keeps the process's start time too, read from ``/proc``
(Linux: the boot time plus the start tick in ``/proc/PID/stat``); a live pid whose start time differs
by more than a second is somebody else. Without ``/proc`` (macOS) only liveness can be checked.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_SAME_START = 1.0  # seconds of slack between a recorded and a read start time


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` after the command name (which may hold spaces and parentheses)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def start_time(pid: int) -> float | None:
    """When ``pid`` started (epoch seconds), or None when it cannot be read (no such process, no /proc)."""
    fields, boot = _stat_fields(pid), _boot_time()
    if fields is None or boot is None:
        return None
    return boot + int(fields[19]) / _TICKS  # field 22 of stat; [0] here is field 3 (the state)


def running(pid: int) -> bool:
    """Alive and not a zombie (an exited child its parent has not reaped yet)."""
    fields = _stat_fields(pid)
    if fields is not None:
        return fields[0] not in ("Z", "X")
    if Path("/proc/self/stat").exists():
        return False  # /proc works, and has no such process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, somebody else's
    return True


@dataclass(frozen=True)
class ProcessRecord:
    """A process as ``stack.json`` records it: pid and start time (epoch seconds)."""

    pid: int
    started_at: float

    @classmethod
    def current(cls) -> ProcessRecord:
        pid = os.getpid()
        return cls(pid, start_time(pid) or time.time())

    @classmethod
    def from_json(cls, doc: Any) -> ProcessRecord | None:
        """The record in ``doc`` (``{"pid", "started_at"}``), or None when it is missing or malformed."""
        if not isinstance(doc, dict):
            return None
        pid, started = doc.get("pid"), doc.get("started_at")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not isinstance(started, int | float):
            return None
        return cls(pid, float(started))

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "started_at": round(self.started_at, 3)}

    def alive(self) -> bool:
        """Still running, and (where the start time can be read) still the same process."""
        if not running(self.pid):
            return False
        actual = start_time(self.pid)
        return actual is None or abs(actual - self.started_at) <= _SAME_START

    def describe(self) -> str:
        return f"pid {self.pid}, started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started_at))}"
