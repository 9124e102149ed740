"""The launch throttle (services/orchestrator/throttle.py), table-driven: only start failures count."""

from __future__ import annotations

import pytest

from services.orchestrator.throttle import ThrottlePolicy, ThrottleState, task_healthy, task_stopped

POLICY = ThrottlePolicy(base=1.0, cap=60.0, free_failures=1)

# (name, events, expected failures, expected delay after the last event)
# events: "fail" = stopped before becoming healthy, "killed" = stopped after becoming healthy,
# "healthy" = a task of the revision passed its health checks.
CASES = [
    ("one start failure restarts at once", ["fail"], 1, 0.0),
    ("second failure in a row waits base", ["fail", "fail"], 2, 1.0),
    ("delays double", ["fail"] * 4, 4, 4.0),
    ("delays stop at the cap", ["fail"] * 12, 12, 60.0),
    ("a killed healthy task is not a failure", ["killed"], 0, 0.0),
    ("kills of healthy tasks never throttle", ["killed"] * 30, 0, 0.0),
    ("a healthy run resets the count", ["fail", "fail", "fail", "healthy", "fail"], 1, 0.0),
    ("a killed healthy task resets the count", ["fail", "fail", "fail", "killed", "fail", "fail"], 2, 1.0),
]


@pytest.mark.parametrize(("name", "events", "failures", "delay"), CASES, ids=[c[0] for c in CASES])
def test_throttle(name: str, events: list[str], failures: int, delay: float) -> None:
    state, now = ThrottleState(), 100.0
    for event in events:
        now += 1
        if event == "healthy":
            state = task_healthy(state)
        else:
            state = task_stopped(POLICY, state, became_healthy=event == "killed", now=now)
    assert state.failures == failures
    assert state.next_launch_at - now == pytest.approx(delay) if delay else state.may_launch(now)


def test_may_launch_only_after_the_delay() -> None:
    state = ThrottleState()
    for t in (0.0, 0.1):
        state = task_stopped(POLICY, state, became_healthy=False, now=t)
    assert not state.may_launch(0.5)
    assert state.may_launch(1.1)


@pytest.mark.parametrize(("failures", "delay"), [(0, 0), (1, 0), (2, 1), (3, 2), (7, 32), (8, 60), (100, 60)])
def test_delay_table(failures: int, delay: float) -> None:
    assert POLICY.delay(failures) == delay
