"""Rollouts: the canaries chosen by a stable hash that only grows with the share, the rollout key
parsed, the decision to advance, and a canary's self-checks."""

from __future__ import annotations

import json

import pytest

from logagent.control.base import EntryHealth
from logagent.control.fleet.bake import judge_crashes, judge_files
from logagent.control.fleet.rollout import (
    Tally,
    advance_problem,
    chosen,
    next_step,
    parse_percent,
    parse_rollout,
    tally,
    why_refused,
)
from logagent.errors import ConfigError

HOSTS = [f"web-{i}" for i in range(2000)]


def doc(**kw: object) -> bytes:
    base = {"id": "r-1", "group": "web", "state": "running", "percent": 5, "bake": 30, "max_failed": 0,
            "candidate": [{"path": "/var/log/a.log", "topic": "a"}]}
    return json.dumps(dict(base, **kw)).encode()


def test_the_chosen_set_is_stable_and_only_grows_5_25_100() -> None:
    at = {p: {h for h in HOSTS if chosen(h, "r-1", p)} for p in (5, 25, 100)}
    assert at[5] <= at[25] <= at[100] == set(HOSTS)
    assert 60 <= len(at[5]) <= 140 and 400 <= len(at[25]) <= 600  # about 5 % and 25 % of 2,000
    assert at[5] == {h for h in HOSTS if chosen(h, "r-1", 5)}  # the same hosts again
    assert at[5] != {h for h in HOSTS if chosen(h, "r-2", 5)}  # another rollout, other canaries
    assert not any(chosen(h, "r-1", 0) for h in HOSTS)


def test_percent_and_steps() -> None:
    assert parse_percent("5%") == 5 and parse_percent(" 0.5 % ") == 0.5 and parse_percent("100") == 100
    for bad in ("0", "101", "x", "nan", "-5%"):
        with pytest.raises(ValueError):
            parse_percent(bad)
    assert [next_step(p) for p in (1, 5, 10, 25, 100)] == [5, 25, 25, 100, 100]


def test_parse_rollout() -> None:
    r = parse_rollout(doc(), "/k", ("/var/log/**",))
    assert r is not None and r.active and r.percent == 5 and r.bake == 30 and why_refused(r) is None
    assert [e.path for e in r.candidate.entries] == ["/var/log/a.log"]
    assert parse_rollout(None, "/k", ()) is None and parse_rollout(b"null", "/k", ()) is None
    assert not parse_rollout(doc(state="aborted"), "/k", ("/var/log/**",)).active  # type: ignore[union-attr]
    for bad, problem in ((doc(id="a/b"), "rollout id"), (doc(state="x"), "state must be"),
                         (doc(percent=300), "percent must be"), (doc(candidate={}), "candidate must be"),
                         (b"[]", "expected a rollout object"), (doc(bake=-1), "bake must be")):
        with pytest.raises(ConfigError, match=problem):
            parse_rollout(bad, "/k", ("/var/log/**",))
    # A candidate this host refuses (outside its allowed_paths): kept, never applied, failed with why.
    r = parse_rollout(doc(candidate=[{"path": "/etc/x", "topic": "a"}]), "/k", ("/var/log/**",))
    assert r is not None and "candidate refused" in (why_refused(r) or "") and "allowed_paths" in (why_refused(r) or "")
    r = parse_rollout(doc(candidate=[{"path": "/var/log/a.log", "topic": "a"}, {"path": "rel", "topic": "b"}]),
                      "/k", ("/var/log/**",))
    assert r is not None and "is relative" in (why_refused(r) or "")


def test_advance_only_when_every_canary_passed_but_max_failed() -> None:
    r = parse_rollout(doc(percent=25), "/k", ("/var/log/**",))
    assert r is not None
    canaries = [h for h in HOSTS[:40] if chosen(h, "r-1", 25)]
    reports = {h: {"id": "r-1", "state": "PASSED"} for h in canaries}
    t = tally(r, [(h, reports.get(h)) for h in HOSTS[:40]])
    assert t.chosen == len(canaries) == t.passed and advance_problem(r, t) is None
    reports[canaries[0]] = {"id": "r-1", "state": "FAILED", "why": "topic check: x"}
    t = tally(r, [(h, reports.get(h)) for h in HOSTS[:40]])
    assert (advance_problem(r, t) or "").startswith("halted: 1 canary failed (max_failed 0)")
    relaxed = parse_rollout(doc(percent=25, max_failed=1), "/k", ("/var/log/**",))
    assert relaxed is not None and advance_problem(relaxed, t) is None
    reports[canaries[1]] = {"id": "r-1", "state": "BAKING"}
    reports[canaries[2]] = {"id": "r-0", "state": "PASSED"}  # an older rollout's report: not this one's
    t = tally(relaxed, [(h, reports.get(h)) for h in HOSTS[:40]])
    assert "1 canary still baking, 1 not reporting" in (advance_problem(relaxed, t) or "")
    assert advance_problem(parse_rollout(doc(state="done"), "/k", ()), Tally()) == "rollout r-1 is done"  # type: ignore[arg-type]


def test_bake_checks() -> None:
    before = {"/var/log/a.log": EntryHealth(files=2), "/var/log/gone.log": EntryHealth(files=0)}
    ok = {"/var/log/a.log": EntryHealth(files=2), "/var/log/new.log": EntryHealth(files=1)}
    assert judge_files(["/var/log/a.log", "/var/log/new.log"], before, ok) is None
    assert judge_files(["/var/log/a.log"], before, {"/var/log/a.log": EntryHealth(files=0)}) == \
        "/var/log/a.log: no file found where the old configuration found 2"
    assert judge_files(["/var/log/typo.log"], before, {"/var/log/typo.log": EntryHealth(error="not found")}) == \
        "/var/log/typo.log: the new entry found no file (not found)"
    assert judge_files(["/var/log/gone.log"], before, {}) is None  # it found nothing before either
    assert judge_crashes(3, 3) is None and judge_crashes(3, 5) == "2 agent task crashes during the bake"
