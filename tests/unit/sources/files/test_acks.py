"""AckTracker: the offset moves only over a prefix of acknowledged batches; failures rewind."""

from __future__ import annotations

from logagent.pipeline.batch import Batch
from logagent.sources.files.acks import Ack, AckTracker


def sent(tracker: AckTracker, end: int) -> Batch:
    batch = Batch("t", b"k", [b"m"], end_offset=end, generation=tracker.generation)
    tracker.sent(batch)
    return batch


def done(tracker: AckTracker, batch: Batch, error: object | None = None) -> Ack:
    batch.remaining, batch.error = 0, error
    return tracker.done(batch)


def test_acks_out_of_order_move_the_offset_only_over_a_prefix() -> None:
    t = AckTracker(acked=0)
    b1, b2, b3 = sent(t, 10), sent(t, 20), sent(t, 30)
    assert done(t, b3) is Ack.WAITING and t.acked == 0
    assert done(t, b2) is Ack.WAITING and t.acked == 0
    assert done(t, b1) is Ack.MOVED and t.acked == 30 and t.pending == 0


def test_a_failed_batch_in_the_middle_holds_the_offset_before_it() -> None:
    t = AckTracker(acked=5)
    b1, b2, b3 = sent(t, 10), sent(t, 20), sent(t, 30)
    assert done(t, b1) is Ack.MOVED and t.acked == 10
    assert done(t, b2, error="MSG_TIMED_OUT") is Ack.FAILED
    assert done(t, b3) is Ack.WAITING and t.acked == 10, "nothing moves past a failed batch"
    assert t.failed == "MSG_TIMED_OUT"
    assert done(t, b2, error="again") is Ack.WAITING, "only the first failure asks for a rewind"


def test_rewind_after_failure_makes_earlier_reports_stale() -> None:
    t = AckTracker(acked=0)
    b1 = sent(t, 10)
    assert done(t, b1, error="x") is Ack.FAILED
    assert t.rewind() == 0 and t.failed is None and t.pending == 0
    assert done(t, b1) is Ack.STALE and t.acked == 0
    b1_again = sent(t, 10)
    assert done(t, b1_again) is Ack.MOVED and t.acked == 10


def test_rewind_to_an_offset_starts_there() -> None:
    t = AckTracker(acked=100)
    old = sent(t, 200)
    assert t.rewind(0) == 0 and t.acked == 0
    assert done(t, old) is Ack.STALE and t.acked == 0
