"""The etcd client's gRPC wait slice: a thread blocked on a gRPC stream looks in vain once a second,
not ten times, and a response or a timeout still ends its wait on time."""

from __future__ import annotations

import threading
import time

from grpc import _common as grpc_common

from logagent.control.etcd_client import GRPC_WAIT_SLICE, _calm_grpc_waits


def _wait(timeout: float | None, notify_after: float | None = None) -> tuple[int, float]:
    """grpc's own wait loop on a condition, as a stream reader uses it: (slices, seconds waited)."""
    cond = threading.Condition()
    done = [False]
    slices = [0]

    def wait_fn(timeout: float | None = None) -> bool:
        slices[0] += 1
        return cond.wait(timeout)

    def respond() -> None:
        with cond:
            done[0] = True
            cond.notify_all()

    if notify_after is not None:
        threading.Timer(notify_after, respond).start()
    t0 = time.monotonic()
    with cond:
        grpc_common.wait(wait_fn, lambda: done[0], timeout=timeout)
    return slices[0], time.monotonic() - t0


def test_a_blocked_reader_looks_once_a_second_and_keeps_timeouts_and_wakes_on_a_response():
    _calm_grpc_waits()
    assert grpc_common.MAXIMUM_WAIT_TIMEOUT == GRPC_WAIT_SLICE == 1.0
    slices, waited = _wait(timeout=1.5)
    assert slices <= 2, f"{slices} looks in 1.5 s of nothing (grpc's default: 15)"
    assert 1.45 <= waited < 1.9, waited
    slices, waited = _wait(timeout=0.25)  # a call's own timeout is kept, not rounded up to a slice
    assert 0.24 <= waited < 0.6, waited
    slices, waited = _wait(timeout=None, notify_after=0.2)  # a response wakes the reader at once
    assert 0.19 <= waited < 0.6, waited
    assert slices == 1
