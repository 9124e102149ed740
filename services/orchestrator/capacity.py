"""Capacity and placement: the machine is one ECS container instance with registered CPU and memory.

ECS places a task on a container instance only when the instance's *remaining* CPU units and memory
(registered minus what its tasks reserve) cover the task definition's ``cpu`` and ``memory``; a task that
does not fit is not started — RunTask reports it in ``failures[]`` with reason ``RESOURCE:CPU`` or
``RESOURCE:MEMORY``, a service records "unable to place a task" and tries again later. pixfleet does the
same instead of overcommitting the machine.

CPU units are reservations, not cores: the process runtime does not pin tasks, so registering exactly
``os.cpu_count() × 1024`` would refuse the default stack on a 2-core machine (api 256 + deadletter 256 +
four workers × 1024 = 4608 units). :func:`default_cpu` registers ``cpu_count × 1024 ×`` :data:`CPU_SHARES`
(8192 units on 2 cores: the default stack at its scaling maximum, and most of a rolling update's surge);
``PIXFLEET_INSTANCE_CPU`` / ``PIXFLEET_INSTANCE_MEMORY`` set other values.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

CPU_SHARES = 4  # CPU units registered per 1024 units of real cores (reservations are shares, not pins)


@dataclass(frozen=True)
class Resources:
    """CPU units (1024 = one vCPU) and memory in MiB."""

    cpu: int
    memory: int

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.memory - other.memory)


NOTHING = Resources(0, 0)


def default_cpu(cpu_count: int | None = None) -> int:
    return (cpu_count or os.cpu_count() or 1) * 1024 * CPU_SHARES


def total_memory_mib() -> int:
    """The machine's RAM in MiB (``/proc/meminfo``, else ``sysconf``)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)


def registered(cpu: int = 0, memory: int = 0) -> Resources:
    """The container instance's registered resources; 0 means "the machine's own"."""
    return Resources(cpu or default_cpu(), memory or total_memory_mib())


def reserved(tasks: Iterable[Resources]) -> Resources:
    total = NOTHING
    for task in tasks:
        total = total + task
    return total


def shortfall(remaining: Resources, wanted: Resources) -> str | None:
    """``None`` when ``wanted`` fits in ``remaining``; else ECS's reason (memory is checked first, as ECS does)."""
    if wanted.memory > remaining.memory:
        return "RESOURCE:MEMORY"
    if wanted.cpu > remaining.cpu:
        return "RESOURCE:CPU"
    return None


def placeable(remaining: Resources, wanted: Resources, count: int) -> tuple[int, str | None]:
    """How many of ``count`` tasks needing ``wanted`` each fit, and the reason the rest do not."""
    placed = 0
    while placed < count:
        reason = shortfall(remaining, wanted)
        if reason is not None:
            return placed, reason
        remaining = remaining - wanted
        placed += 1
    return placed, None
