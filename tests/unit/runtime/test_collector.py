"""The collector's thresholds for a process holding many long-lived objects (issue 23)."""

from __future__ import annotations

import gc

from logagent.runtime import collector


def test_tune_collects_the_young_generation_less_often_and_still_collects_the_old() -> None:
    before = gc.get_threshold()
    try:
        collector.tune()
        young, middle, old = gc.get_threshold()
        assert young >= 50 * before[0] and middle >= before[1]
        assert 0 < old <= 10  # the old generation is still collected
        assert gc.isenabled()
    finally:
        gc.set_threshold(*before)
