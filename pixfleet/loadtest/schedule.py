"""Rate schedules for ``pixfleet load``: how many jobs should have been submitted after ``t`` seconds.

Each schedule is a tiny pure object behind :class:`Schedule`; :func:`parse_schedule` is the one
place that maps the command line's text to one:

* ``constant:RATE`` (or just ``RATE``) — RATE jobs per second for the whole duration;
* ``ramp:FROM-TO`` — the rate changes linearly from FROM to TO jobs per second over the duration;
* ``burst:N`` — N jobs at once, at the start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

MAX_RATE = 10_000.0
MAX_JOBS = 1_000_000


class Schedule(Protocol):
    def due(self, elapsed: float) -> int:
        """Jobs that should have been submitted ``elapsed`` seconds after the start."""

    @property
    def total(self) -> int:
        """Jobs submitted by the end of the schedule."""

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Constant:
    rate: float
    duration: float

    @property
    def total(self) -> int:
        return max(1, math.floor(self.rate * self.duration + 1e-9))

    def due(self, elapsed: float) -> int:
        # The first job goes at t=0, then one every 1/rate seconds.
        return 0 if elapsed < 0 else min(self.total, math.floor(self.rate * elapsed + 1e-9) + 1)

    def describe(self) -> str:
        return f"constant {self.rate:g}/s for {self.duration:g} s"


@dataclass(frozen=True)
class Ramp:
    start: float
    end: float
    duration: float

    def _submitted(self, t: float) -> float:
        """The integral of the rate from 0 to ``t``."""
        t = min(max(t, 0.0), self.duration)
        return self.start * t + (self.end - self.start) * t * t / (2 * self.duration)

    @property
    def total(self) -> int:
        return max(1, math.floor(self._submitted(self.duration) + 1e-9))

    def due(self, elapsed: float) -> int:
        return 0 if elapsed < 0 else min(self.total, math.floor(self._submitted(elapsed) + 1e-9) + 1)

    def describe(self) -> str:
        return f"ramp {self.start:g}/s → {self.end:g}/s over {self.duration:g} s"


@dataclass(frozen=True)
class Burst:
    count: int

    @property
    def total(self) -> int:
        return self.count

    def due(self, elapsed: float) -> int:
        return 0 if elapsed < 0 else self.count

    def describe(self) -> str:
        return f"burst of {self.count}"


def _rate(text: str) -> float:
    value = float(text.strip().removesuffix("/s"))
    if not math.isfinite(value) or value < 0 or value > MAX_RATE:
        raise ValueError(f"rate {text!r} must be between 0 and {MAX_RATE:g} jobs per second")
    return value


def parse_schedule(text: str, duration: float) -> Schedule:
    """``constant:5``, ``5``, ``ramp:1-20``, ``burst:200`` → a :class:`Schedule`; ValueError says what is wrong."""
    kind, _, arg = text.strip().lower().partition(":")
    if not arg and kind.removesuffix("/s").replace(".", "", 1).isdigit():
        kind, arg = "constant", kind  # a bare rate
    if duration <= 0 and kind != "burst":
        raise ValueError("the duration must be positive")
    try:
        if kind == "constant":
            rate = _rate(arg)
            if rate == 0:
                raise ValueError("a constant rate must be above 0")
            return Constant(rate, duration)
        if kind == "ramp":
            start, sep, end = arg.replace("..", "-").partition("-")
            if not sep:
                raise ValueError("write a ramp as ramp:FROM-TO, e.g. ramp:1-20")
            ramp = Ramp(_rate(start), _rate(end), duration)
            if ramp.start == ramp.end == 0:
                raise ValueError("a ramp from 0 to 0 submits nothing")
            return ramp
        if kind == "burst":
            count = int(arg)
            if not 1 <= count <= MAX_JOBS:
                raise ValueError(f"a burst needs 1..{MAX_JOBS} jobs")
            return Burst(count)
    except ValueError as exc:
        if "could not convert" in str(exc) or "invalid literal" in str(exc):
            raise ValueError(f"{text!r}: not a number where one is expected") from None
        raise ValueError(f"{text!r}: {exc}") from None
    raise ValueError(f"{text!r}: unknown schedule {kind!r} (use constant:RATE, ramp:FROM-TO or burst:N)")
