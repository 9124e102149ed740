"""Small measuring helpers shared by the benchmarks: memory and CPU of processes, the machine."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK")


def status_kib(pid: int | str, field: str) -> int | None:
    """A ``/proc/PID/status`` memory field (``VmHWM``, ``VmRSS``...) in KiB, None when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def peak_rss_mb(pid: int | str = "self") -> float:
    """Peak resident set size (VmHWM) of a process in MB (10^6 bytes)."""
    return round((status_kib(pid, "VmHWM") or 0) * 1024 / 1e6, 1)


def reset_peak_rss(pid: int) -> bool:
    """Reset a process's VmHWM to its current RSS (Linux ``clear_refs`` 5); False when not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on; the name may hold spaces


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid``, its living descendants, and its reaped children."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        fields = _stat_fields(p)
        if fields:
            utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
            total += utime + stime + cutime + cstime
        stack.extend(children.get(p, []))
    return total / _TICK


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5, check=False).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), model)
    except (OSError, subprocess.SubprocessError):
        pass
    from PIL import __version__ as pillow_version

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "pillow": pillow_version,
        "platform": platform.platform(),
    }


def write_json(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
