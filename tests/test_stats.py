"""The one percentile helper of the tools (benchmarks and load tests agree on it)."""

from __future__ import annotations

import pytest

from pixfleet.stats import percentile


@pytest.mark.parametrize(
    ("values", "q", "expected", "is_error"),
    [
        ([], 50, None, False),  # no sample, no percentile (not 0)
        ([], 0, None, False),
        ([3.0], 99, 3.0, False),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5, False),
        ([1.0, 2.0, 3.0, 4.0, 5.0], 95, 4.8, False),
        ([5.0, 1.0], 0, 1.0, False),
        ([5.0, 1.0], 100, 5.0, False),
        ((2.0, 4.0), 50, 3.0, False),  # any sequence
        ([1.0], 101, None, True),
        ([1.0], -1, None, True),
        ([], 150, None, True),  # a bad q is refused even for an empty sample
    ],
)
def test_percentile(values: list[float], q: float, expected: float | None, is_error: bool) -> None:
    if is_error:
        with pytest.raises(ValueError, match=r"within 0\.\.100"):
            percentile(values, q)
        return
    got = percentile(values, q)
    assert got == (pytest.approx(expected) if expected is not None else None)
