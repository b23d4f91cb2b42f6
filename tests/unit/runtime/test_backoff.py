"""The one backoff: exponential to a cap, with jitter, reset by a success."""

from __future__ import annotations

import pytest

from logagent.runtime.backoff import Backoff


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    b = Backoff(first=0.5, cap=4, jitter=0.2, rand=lambda: 0.5)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next() == 0.5
    low = Backoff(first=1, jitter=0.2, rand=lambda: 0.0).next()
    high = Backoff(first=1, jitter=0.2, rand=lambda: 1.0).next()
    assert (low, high) == (pytest.approx(0.8), pytest.approx(1.2))
