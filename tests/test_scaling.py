"""Table tests of the scaling policy (a pure function: no clock, no queue)."""

from __future__ import annotations

import pytest

from services.orchestrator.scaling import QueueMetrics, ScalingPolicy, ScalingState, decide, demand

P = ScalingPolicy(min=0, max=5, target_backlog_per_task=10, scale_in_cooldown=30, activation_threshold=3)


@pytest.mark.parametrize(
    ("name", "policy", "current", "metrics", "expected"),
    [
        ("empty queue stays at zero", P, 0, QueueMetrics(0), 0),
        ("below activation stays at zero", P, 0, QueueMetrics(2), 0),
        ("activation brings the first task", P, 0, QueueMetrics(3), 1),
        ("in-flight messages count", P, 2, QueueMetrics(visible=5, in_flight=20), 3),
        (
            "in-flight ignored when configured",
            ScalingPolicy(max=5, count_in_flight=False),
            2,
            QueueMetrics(5, in_flight=20),
            1,
        ),
        ("delayed ignored by default", P, 1, QueueMetrics(5, delayed=100), 1),
        (
            "delayed counted when configured",
            ScalingPolicy(max=5, count_delayed=True),
            1,
            QueueMetrics(5, delayed=30),
            4,
        ),
        ("clamped to max", P, 1, QueueMetrics(1000), 5),
        ("held at min", ScalingPolicy(min=2, max=5), 2, QueueMetrics(0), 2),
        ("once running, one message keeps one task", P, 1, QueueMetrics(1), 1),
    ],
)
def test_demand(name: str, policy: ScalingPolicy, current: int, metrics: QueueMetrics, expected: int) -> None:
    assert demand(policy, current, metrics) == expected


def test_target_from_acceptable_latency_uses_the_measured_job_time() -> None:
    policy = ScalingPolicy(max=10, acceptable_latency=10, task_slots=2)
    # 0.5 s per job, 2 slots: one task clears 40 messages within 10 s.
    assert policy.target(0.5) == 40
    assert demand(policy, 1, QueueMetrics(100), mean_job_seconds=0.5) == 3
    # Without a measurement it falls back to the fixed target.
    assert policy.target(None) == policy.target_backlog_per_task


@pytest.mark.parametrize(
    ("name", "steps", "expected"),
    [
        # each step: (now, current, visible) → (desired, action)
        ("scale out at once", [(0, 1, 45)], [(5, "scale_out")]),
        (
            "scale in only after sustained lower demand",
            [(0, 5, 0), (10, 5, 0), (29, 5, 0), (30, 5, 0)],
            [(5, "hold"), (5, "hold"), (5, "hold"), (0, "scale_in")],
        ),
        (
            "a spike during the window resets nothing but sets the floor",
            [(0, 5, 0), (10, 5, 25), (30, 5, 0)],
            [(5, "hold"), (5, "hold"), (3, "scale_in")],
        ),
        (
            "demand back at current restarts the scale-in clock",
            [(0, 5, 0), (20, 5, 50), (40, 5, 0), (60, 5, 0), (70, 5, 0)],
            [(5, "hold"), (5, "hold"), (5, "hold"), (5, "hold"), (0, "scale_in")],
        ),
        (
            "scale-out cooldown",
            [(0, 1, 30), (1, 3, 50)],
            [(3, "scale_out"), (3, "hold")],
        ),
    ],
)
def test_decisions_over_time(name: str, steps: list, expected: list) -> None:
    policy = ScalingPolicy(
        min=0,
        max=5,
        target_backlog_per_task=10,
        scale_in_cooldown=30,
        scale_out_cooldown=5 if "cooldown" in name else 0,
    )
    state = ScalingState()
    got = []
    for now, current, visible in steps:
        d = decide(policy, current, QueueMetrics(visible), now, state)
        state = d.state
        got.append((d.desired, d.action))
    assert got == expected


@pytest.mark.parametrize(
    ("current", "policy", "expected"),
    [
        (3, P, 3),
        (7, P, 5),  # a failed read still respects a lowered max
        (0, ScalingPolicy(min=1, max=3), 1),
    ],
)
def test_a_failed_metric_read_holds_and_counts(current: int, policy: ScalingPolicy, expected: int) -> None:
    state = ScalingState()
    for n in range(1, 4):
        d = decide(policy, current, None, float(n), state)
        state = d.state
        assert (d.desired, d.action, state.failures) == (expected, "hold", n)
    d = decide(policy, current, QueueMetrics(0), 10.0, state)
    assert d.state.failures == 0
