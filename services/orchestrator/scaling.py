"""The autoscaling policy of a service: a pure function from queue depth to a desired task count.

Target tracking on backlog per task, as AWS recommends for queue workers:
``desired = ceil(backlog / target)``, clamped to ``[min, max]``, where the backlog
counts visible messages plus (optionally) in-flight and delayed ones. The target
is either given (messages per task) or derived from an acceptable latency and
the measured mean job time.

Time rules: scale out at once (unless inside the scale-out cooldown); scale in
only after demand has stayed lower for the whole scale-in cooldown, and then only
to the highest demand seen during that window. A failed metric read never
scales: the count is held and the failures are counted (KEDA's rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ScalingPolicy:
    """A service's target-tracking policy (its rules, e.g. ``max >= min``, are checked by :mod:`services_file`)."""

    min: int = 0
    max: int = 4
    target_backlog_per_task: float = 10.0
    acceptable_latency: float | None = None
    task_slots: int = 1
    scale_out_cooldown: float = 0.0
    scale_in_cooldown: float = 30.0
    activation_threshold: int = 1
    count_in_flight: bool = True
    count_delayed: bool = False

    def target(self, mean_job_seconds: float | None) -> float:
        """Messages one task may have queued: given, or derived from the acceptable latency."""
        if self.acceptable_latency is not None and mean_job_seconds and mean_job_seconds > 0:
            return max(1.0, self.acceptable_latency / mean_job_seconds * self.task_slots)
        return self.target_backlog_per_task


@dataclass(frozen=True)
class QueueMetrics:
    visible: int
    in_flight: int = 0
    delayed: int = 0


@dataclass(frozen=True)
class ScalingState:
    """What the policy remembers between ticks."""

    last_scale_out: float | None = None
    last_scale_in: float | None = None
    lower_since: float | None = None
    lower_peak: int = 0
    failures: int = 0


@dataclass(frozen=True)
class Decision:
    desired: int
    action: str  # "scale_out" | "scale_in" | "hold"
    reason: str
    state: ScalingState
    backlog: int | None = None


def backlog_of(policy: ScalingPolicy, metrics: QueueMetrics) -> int:
    return (
        metrics.visible
        + (metrics.in_flight if policy.count_in_flight else 0)
        + (metrics.delayed if policy.count_delayed else 0)
    )


def demand(policy: ScalingPolicy, current: int, metrics: QueueMetrics, mean_job_seconds: float | None = None) -> int:
    """Tasks the backlog calls for, clamped to [min, max], with the activation rule for 0 → 1."""
    backlog = backlog_of(policy, metrics)
    if current == 0 and backlog < policy.activation_threshold:
        wanted = 0
    else:
        wanted = math.ceil(backlog / policy.target(mean_job_seconds))
    return min(policy.max, max(policy.min, wanted))


def decide(
    policy: ScalingPolicy,
    current: int,
    metrics: QueueMetrics | None,
    now: float,
    state: ScalingState = ScalingState(),
    mean_job_seconds: float | None = None,
) -> Decision:
    """The desired count for this tick, and the state to remember for the next."""
    if metrics is None:
        held = min(policy.max, max(policy.min, current))
        failures = state.failures + 1
        return Decision(
            held,
            "hold",
            f"queue metrics unavailable ({failures} in a row): holding {held}",
            replace(state, failures=failures),
        )
    state = replace(state, failures=0)
    backlog = backlog_of(policy, metrics)
    wanted = demand(policy, current, metrics, mean_job_seconds)
    target = policy.target(mean_job_seconds)
    why = (
        f"backlog {backlog} (visible {metrics.visible}, in flight {metrics.in_flight}, "
        f"delayed {metrics.delayed}) at target {target:g}/task"
    )
    if wanted > current:
        state = replace(state, lower_since=None, lower_peak=0)
        if state.last_scale_out is not None and now - state.last_scale_out < policy.scale_out_cooldown:
            return Decision(current, "hold", f"{why} wants {wanted}, in scale-out cooldown", state, backlog)
        return Decision(wanted, "scale_out", f"{why} wants {wanted}", replace(state, last_scale_out=now), backlog)
    if wanted < current:
        if state.lower_since is None:
            lower_since = now
            state = replace(state, lower_since=now, lower_peak=wanted)
        else:
            lower_since = state.lower_since
            state = replace(state, lower_peak=max(state.lower_peak, wanted))
        waited = now - lower_since
        if waited < policy.scale_in_cooldown:
            return Decision(
                current,
                "hold",
                f"{why} wants {wanted}; scale in after {policy.scale_in_cooldown - waited:.0f}s more",
                state,
                backlog,
            )
        new = state.lower_peak
        return Decision(
            new,
            "scale_in",
            f"{why}: demand stayed at or below {new} for {policy.scale_in_cooldown:g}s",
            replace(state, last_scale_in=now, lower_since=None, lower_peak=0),
            backlog,
        )
    return Decision(current, "hold", why, replace(state, lower_since=None, lower_peak=0), backlog)
