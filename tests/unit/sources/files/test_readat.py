"""The compiled reader (sources/files/_readat.c): a file's new bytes and its head's hash in one call."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from logagent.sources.files import tailer
from tests.kit import need_compiled


@pytest.fixture
def readat() -> ModuleType:
    need_compiled("" if tailer._readat is not None else "logagent.sources.files._readat is not built",
                  "the compiled reader")
    assert tailer._readat is not None and tailer.head_hash is tailer._readat.head_hash
    return tailer._readat


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    path = tmp_path / "a.log"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    try:
        yield path, fd
    finally:
        os.close(fd)


def test_the_bytes_at_the_offset_and_the_hash_of_the_head_read_after_them(readat: ModuleType,
                                                                          opened: tuple[Path, int]):
    path, fd = opened
    head = bytes(range(256)) * 4 + b"rest of the first line\n"
    path.write_bytes(head + b"second line\n")
    data, hashed = readat.read_new(fd, len(head), 1 << 14, 1024)
    assert data == b"second line\n"
    assert hashed == readat.head_hash(head[:1024]) >= 0
    # What the file holds from 0 is hashed, whatever the offset: the same head, the same hash.
    assert readat.read_new(fd, 5, 3, 1024) == (head[5:8], hashed)
    # At most `size` bytes.
    assert readat.read_new(fd, 0, 10, 0) == (head[:10], -1)


def test_no_hash_without_new_bytes_or_a_whole_head(readat: ModuleType, opened: tuple[Path, int]):
    path, fd = opened
    path.write_bytes(b"x" * 100)
    assert readat.read_new(fd, 100, 4096, 64) == (b"", -1)  # nothing new: the caller looks (fstat)
    assert readat.read_new(fd, 50, 4096, 0) == (b"x" * 50, -1)  # no head asked for
    assert readat.read_new(fd, 50, 4096, 101) == (b"x" * 50, -1)  # the head is shorter than asked (truncated)
    # A head longer than the call's own buffer (4 KiB) is read into one allocated for it.
    path.write_bytes(b"y" * 9000)
    data, hashed = readat.read_new(fd, 8999, 10, 5000)
    assert data == b"y" and hashed == readat.head_hash(b"y" * 5000)


def test_reads_of_any_size_give_what_the_file_holds(readat: ModuleType, opened: tuple[Path, int]):
    """A read that fits the call's stack buffer (4 KiB) and one that does not: the same bytes as
    os.pread, never more than asked."""
    path, fd = opened
    content = os.urandom(20000)
    path.write_bytes(content)
    for pos, size in ((0, 100), (19900, 4096), (19900, 1 << 14), (0, 4096), (0, 4097), (100, 1 << 14),
                      (0, 1 << 16), (20000, 1 << 14), (25000, 10)):
        data, hashed = readat.read_new(fd, pos, size, 1024)
        assert data == os.pread(fd, size, pos) == content[pos:pos + size]
        assert hashed == (readat.head_hash(content[:1024]) if data else -1)


def test_the_hash_tells_heads_apart(readat: ModuleType):
    one = b"2026-12-07 first line of the log\n" * 31
    assert readat.head_hash(one) == readat.head_hash(bytes(one))
    assert readat.head_hash(one) != readat.head_hash(one[:-1] + b"!")  # the last byte (a partial word)
    assert readat.head_hash(one) != readat.head_hash(b"!" + one[1:])  # the first byte
    assert readat.head_hash(b"") != readat.head_hash(b"\0")  # the length counts
    assert readat.head_hash(memoryview(one)) == readat.head_hash(one)  # any buffer


def test_errors_are_raised_as_os_pread_raises_them(readat: ModuleType, opened: tuple[Path, int]):
    _, fd = opened
    closed = os.dup(fd)
    os.close(closed)
    with pytest.raises(OSError) as raised:
        readat.read_new(closed, 0, 10, 0)
    assert raised.value.errno == errno.EBADF
    for args in ((fd, -1, 10, 0), (fd, 0, -1, 0), (fd, 0, 10, -1), (fd, 0, 10, 65537)):
        with pytest.raises(ValueError):
            readat.read_new(*args)
    with pytest.raises(TypeError):
        readat.read_new(fd, 0, 10)
    with pytest.raises(TypeError):
        readat.head_hash("not bytes")
