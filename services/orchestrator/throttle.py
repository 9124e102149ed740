"""The service launch throttle: ECS's answer to a crash loop, as a pure function.

ECS throttles a service whose tasks keep failing to *start*: tasks that go from
PENDING straight to STOPPED, or never pass their health checks. It does not throttle
a service because healthy tasks were killed (a failure drill, an OOM kill of a busy
worker, a host going away): those tasks ran, and replacing them at once is what keeps
the service serving. So:

* only a task that stopped **before it ever became healthy** counts as a failure;
* failures are counted **per task definition revision** (a bad new revision must not
  slow down the replacement of good old ones, nor the rollback to them);
* the delay before the next launch of that revision doubles with each failure in a
  row (``base``, ``2·base``, … up to ``cap``), the first failure restarting at once;
* a task of that revision becoming healthy resets the count.

Kills of healthy tasks therefore never hold a service with demand at zero: each one is
replaced on the next control-loop tick.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ThrottlePolicy:
    base: float = 1.0  # delay after the second failure in a row
    cap: float = 60.0
    free_failures: int = 1  # failures in a row that restart at once

    def delay(self, failures: int) -> float:
        """Seconds to wait before the next launch after ``failures`` failures in a row."""
        if failures <= self.free_failures:
            return 0.0
        return min(self.cap, self.base * 2 ** (failures - self.free_failures - 1))


@dataclass(frozen=True)
class ThrottleState:
    """What the throttle remembers about one task definition revision of one service."""

    failures: int = 0
    next_launch_at: float = 0.0

    def may_launch(self, now: float) -> bool:
        return now >= self.next_launch_at


def task_stopped(policy: ThrottlePolicy, state: ThrottleState, *, became_healthy: bool, now: float) -> ThrottleState:
    """The state after a task of this revision stopped unasked (it exited, was killed, or failed checks).

    A task that had become healthy is not a start failure: the count resets and the
    replacement starts at once.
    """
    if became_healthy:
        return ThrottleState()
    failures = state.failures + 1
    return ThrottleState(failures=failures, next_launch_at=now + policy.delay(failures))


def task_healthy(state: ThrottleState) -> ThrottleState:
    """A task of this revision passed its health checks: the revision starts fine."""
    return ThrottleState()
