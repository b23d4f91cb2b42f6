"""`fleet status` from status and seen records: live, stopped and offline hosts, the desired check
by key revisions, and the exit status scripts gate on."""

from __future__ import annotations

from datetime import UTC, datetime

from logagent.control.fleet.view import exit_status, rows, source_keys, table_lines

NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)


def status(host: str, state: str = "APPLIED", rev: int = 7, **kw: object) -> dict:
    return {"id": host, "state": state, "version": "1.0", "groups": ["web"], "behind": 2048,
            "config": {"hash": "h-" + host, "sources": {"/g/web": rev, "/h/" + host: 0}},
            "changed": "2026-12-06T11:59:30.000000Z", **kw}


def test_rows_states_desired_and_exit() -> None:
    statuses = {"a": status("a"), "b": status("b", rev=6),
                "c": status("c", "FAILED", errors=["/g/web entry 1: bad"],
                            rollouts={"web": {"id": "r1", "state": "FAILED", "why": "x.log: no file"}})}
    seen = {"a": {"state": "RUNNING"}, "d": {"id": "d", "state": "RUNNING", "hash": "h-d", "groups": ["web"],
                                            "at": "2026-12-06T11:00:00.000000Z"},
            "e": {"id": "e", "state": "STOPPED", "groups": ["db"]}}
    assert source_keys(list(statuses.values())) == {"/g/web", "/h/a", "/h/b", "/h/c"}
    table = rows(statuses, seen, {"/g/web": 7})
    by = {r.id: r for r in table}
    assert [r.id for r in table] == ["a", "b", "c", "d", "e"]
    assert by["a"].ok and by["a"].desired
    assert not by["b"].desired and by["b"].stale == ["/g/web"] and not by["b"].ok  # behind the group key
    assert by["c"].desired and not by["c"].ok  # FAILED
    assert by["d"].state == "offline" and not by["d"].ok and by["d"].hash == "h-d"
    assert by["e"].state == "stopped" and by["e"].ok  # a clean stop fails nothing
    assert exit_status(table) == 1 and exit_status([by["a"], by["e"]]) == 0
    lines = table_lines(table, NOW)
    assert lines[0].split() == ["ID", "VERSION", "STATE", "CONFIG", "DESIRED", "BEHIND", "LAST", "CHANGE", "GROUPS"]
    assert lines[1].split() == ["a", "1.0", "APPLIED", "h-a", "yes", "2.0KiB", "30s", "ago", "web"]
    assert "  c: rollout r1 of group web FAILED: x.log: no file" in lines
    assert "  c: /g/web entry 1: bad" in lines
    assert "  b: not on the desired configuration: /g/web changed since" in lines
    assert any(line.startswith("d ") and "offline" in line and "1h ago" in line for line in lines)
