"""FdBudget: which open file is closed when all descriptors are taken."""

from __future__ import annotations

from logagent.sources.files.budget import FdBudget


class _File:
    """A tailer as the budget sees it: closing releases its slot (as FileTailer.close_idle does)."""

    def __init__(self, name: str, budget: FdBudget) -> None:
        self.name = name
        self.budget = budget
        self.closed = False

    @property
    def evictable(self) -> bool:
        return True

    def close_idle(self, why: str) -> None:
        self.closed = True
        self.budget.release(self)


def test_the_least_recently_read_file_is_closed_when_all_are_taken() -> None:
    budget = FdBudget(4)
    files = [_File(n, budget) for n in "abcd"]
    for f in files:
        assert budget.acquire(f)
    budget.touch(files[0])  # a was read last: b is now the least recently read
    e = _File("e", budget)
    assert budget.acquire(e)
    assert [f.name for f in files if f.closed] == ["b"]
    assert budget.in_use == 4


def test_below_half_the_limit_reads_do_not_reorder_and_from_half_on_they_do() -> None:
    budget = FdBudget(8)
    a, b, c, d = (_File(n, budget) for n in "abcd")
    for f in (a, b, c):
        budget.acquire(f)
    budget.touch(a)  # 3 of 8 open: not kept in order (nothing is closed soon)
    assert list(budget._open.values()) == [a, b, c]
    budget.acquire(d)
    budget.touch(a)  # 4 of 8: kept in order
    assert list(budget._open.values()) == [b, c, d, a]
