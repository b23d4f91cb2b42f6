"""`logagent files`: the agent's /files as a table, the files behind first; the address from the config."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from logagent.cli.files_cmd import _url, table
from logagent.cli.main import main
from logagent.runtime.status import StatusServer


def _row(path: str, read: int, acked: int, state: str = "sending", source: str = "current file") -> dict[str, object]:
    return {"path": path, "entry": "/var/log/*.log", "topic": "t", "source": source, "state": state, "read": read,
            "acked": acked, "in_flight": 1, "partial_bytes": 0, "kafka_failures": 0}


def test_the_table_shows_the_files_behind_first_and_hides_those_caught_up():
    rows = [_row("/var/log/a.log", 10, 10, "following (all read is acknowledged)"),
            _row("/var/log/b.log", 500, 100), _row("/var/log/c.log", 900, 0, "waiting for an earlier file",
                                                    source="earlier file (compressed: /var/log/c.log.2.gz)"),
            _row("/var/log/d\x1b.log", 5, 5, "closed (idle, or no descriptor free): reopened when it changes")]
    lines = table(rows, show_all=False)
    assert "c.log (earlier file (compressed: /var/log/c.log.2.gz))" in lines[2] and lines[1].split()[0] == "900"
    assert lines[3].split()[0] == "400" and "b.log" in lines[4]
    assert "\x1b" not in "".join(lines) and "d\\x1b.log" in "".join(lines)  # a name's controls shown escaped
    assert lines[-1] == "4 files, 1 caught up not shown (--all shows them)"
    assert len(table(rows, show_all=True)) == 1 + 2 * 4 + 1


def test_the_address_asked_is_loopback_when_the_agent_listens_everywhere():
    assert _url("0.0.0.0:9798") == "http://127.0.0.1:9798/files"
    assert _url("[::1]:9798") == "http://[::1]:9798/files"
    assert _url("127.0.0.1:1234") == "http://127.0.0.1:1234/files"


async def test_files_asks_the_agent_of_the_config_and_says_when_none_answers(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]):
    server = StatusServer("127.0.0.1", 0, lambda: (True, "ready"),
                          files=lambda: [_row("/var/log/b.log", 500, 100)])
    await server.start()
    cfg = tmp_path / "c.ini"
    cfg.write_text(f"[agent]\nhttp_listen = 127.0.0.1:{server.port}\n[kafka]\naddress = 127.0.0.1:9\n")
    try:
        assert await asyncio.to_thread(main, ["files", "-c", str(cfg)]) == 0
        out = capsys.readouterr().out
        assert "/var/log/b.log" in out and out.splitlines()[1].split()[0] == "400"
    finally:
        await server.stop()
    assert await asyncio.to_thread(main, ["files", "-c", str(cfg), "--timeout", "1"]) == 1
    assert "no answer from the agent at http://127.0.0.1:" in capsys.readouterr().err
