"""The exactly_once offset record: its key, its value, and names that are not UTF-8."""

from __future__ import annotations

import pytest

from logagent.pipeline.checkpoint import TXN_KEY, Checkpoint, split_key


def test_a_checkpoint_survives_its_record():
    c = Checkpoint("8-12-1700000000000000", "/var/log/app.log", 8, 12, 1700000000.0, "ab" * 12, 1024, 4096, 5000)
    assert c.key("web-1") == b"web-1/8-12-1700000000000000"
    assert Checkpoint.decode(c.uid, c.value()) == c


def test_a_name_that_is_not_utf8_is_carried_losslessly():
    raw = b"/var/log/\xff\xfe.log".decode("utf-8", "surrogateescape")
    c = Checkpoint("1-2-3", raw, 1, 2, 3.0, "ff", 2, 10)
    assert Checkpoint.decode(c.uid, c.value()).path == raw


def test_a_record_that_is_not_a_checkpoint_is_refused():
    with pytest.raises(ValueError, match="not a checkpoint"):
        Checkpoint.decode("x", b'{"path": "/a"}')
    with pytest.raises(ValueError, match="not a checkpoint"):
        Checkpoint.decode("x", b"\xff")


def test_keys_of_other_hosts_are_not_ours():
    assert split_key(b"web-1/1-2-3", "web-1") == "1-2-3"
    assert split_key(b"web-1/" + TXN_KEY.encode(), "web-1") == TXN_KEY
    assert split_key(b"web-10/1-2-3", "web-1") is None
    assert split_key(b"web-1/\xff", "web-1") is None
