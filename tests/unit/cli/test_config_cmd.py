"""`logagent config ...` without an etcd: validation comes first (exit 2, nothing sent),
an unreachable etcd is exit 1, and the diff shows what would change.
(Writing to a real etcd is in tests/integration/test_etcd.py.)"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from devstack.stack import free_port
from logagent.cli.config_cmd import _diff, _field_value, _pretty
from logagent.cli.main import main

KEY = "/logagent/10.0.0.5/collect_log/config"


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    """A config.ini whose etcd is a port nothing listens on."""
    path = tmp_path / "config.ini"
    path.write_text(f"[etcd]\naddress = 127.0.0.1:{free_port()}\ntimeout = 1\n"
                    f"[agent]\nip = 10.0.0.5\nallowed_paths = /var/log/**\ndata_dir = {tmp_path}\n")
    return path


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, problem", [
    ("[{not json", "not valid JSON"),
    ('[{"path": "rel.log", "topic": "t"}]', "is relative"),
    ('[{"path": "/etc/passwd", "topic": "t"}]', "outside [agent] allowed_paths"),
    ('[{"path": "/var/log/a.log", "topic": ""}]', "topic must be a non-empty string"),
    ('[{"path": "/var/log/a.log", "topic": "t"}, {"path": "/etc/x", "topic": "t"}]', "entry 1"),
])
def test_set_collect_bad_value_exits_2_before_etcd_is_asked(tmp_path: Path, cfg: Path,
                                                           capsys: pytest.CaptureFixture[str],
                                                           text: str, problem: str) -> None:
    code = main(["config", "set-collect", "-c", str(cfg), write(tmp_path, "v.json", text)])
    err = capsys.readouterr().err
    assert code == 2
    assert problem in err and KEY in err and "nothing written" in err


def test_set_collect_good_value_but_etcd_unreachable_exits_1(tmp_path: Path, cfg: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "v.json", '[{"path":"/var/log/app.log","topic":"app_log"}]')
    assert main(["config", "set-collect", "-c", str(cfg), "--dry-run", path]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_show_with_etcd_unreachable_exits_1(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "-c", str(cfg)]) == 1
    assert "etcd 127.0.0.1:" in capsys.readouterr().err


def test_set_collect_reads_stdin(cfg: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b'[{"path": "x", "topic": "t"}]')))
    assert main(["config", "set-collect", "-c", str(cfg), "-"]) == 2
    assert "relative" in capsys.readouterr().err


@pytest.mark.parametrize("args, problem", [
    (["--interval", "0"], "interval must be"),
    (["--interval", "soon"], "interval must be"),
    (["--topic", "no spaces"], "topic must be"),
    (["--enabled", "maybe"], "enabled must be"),
    (["--format", "xml"], "format must be"),
    # the same validators as the etcd value's
    (["--topic", "__consumer_offsets"], "is internal to Kafka"),
    (["--topic", ".."], "topic must be a valid Kafka topic name"),
    (["--interval", "nan"], "interval must be a number of seconds > 0, got 'nan'"),
    (["--interval", "1e400"], "interval must be a number of seconds > 0, got '1e400'"),
])
def test_set_sysinfo_bad_flag_exits_2(cfg: Path, capsys: pytest.CaptureFixture[str],
                                      args: list[str], problem: str) -> None:
    assert main(["config", "set-sysinfo", "-c", str(cfg), *args]) == 2
    err = capsys.readouterr().err
    assert problem in err and "/logagent/10.0.0.5/collect_sysinfo/config" in err


def test_set_sysinfo_bad_file_exits_2(tmp_path: Path, cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "set-sysinfo", "-c", str(cfg), write(tmp_path, "s.json", "[1]")]) == 2
    assert "expected an object" in capsys.readouterr().err


def test_set_sysinfo_needs_a_file_or_flags_not_both(tmp_path: Path, cfg: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["config", "set-sysinfo", "-c", str(cfg)])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["config", "set-sysinfo", "-c", str(cfg), write(tmp_path, "s.json", "{}"), "--interval", "3"])
    assert exc.value.code == 2


def test_no_etcd_address_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "c.ini", "[etcd]\naddress =\n")
    assert main(["config", "show", "-c", path]) == 2
    assert "[etcd] address is empty" in capsys.readouterr().err


def test_field_values_become_json_types() -> None:
    assert _field_value("interval", "10") == 10 and _field_value("interval", "2.5") == 2.5
    assert _field_value("enabled", "false") is False and _field_value("enabled", "on") is True
    assert _field_value("topic", "t") == "t"


def test_diff_is_on_pretty_json() -> None:
    old = b'[{"path":"/var/log/a.log","topic":"a"}]'
    new = json.dumps([{"path": "/var/log/a.log", "topic": "b"}]).encode()
    diff = _diff(KEY, old, new)
    assert f"--- {KEY} (stored)" in diff and f"+++ {KEY} (new)" in diff
    assert '-    "topic": "a"' in diff and '+    "topic": "b"' in diff
    assert f"--- {KEY} (not set)" in _diff(KEY, None, new)
    assert _diff(KEY, old, b'[{"path": "/var/log/a.log", "topic": "a"}]') == ""


def test_set_sysinfo_without_file_or_flags_says_what_to_give(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["config", "set-sysinfo", "-c", str(cfg)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "give a FILE (or - for stdin) or at least one field flag (--enabled, --topic, --interval, --format)" in err
    assert "not both" not in err


def test_set_sysinfo_with_file_and_flags_says_not_both(tmp_path: Path, cfg: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["config", "set-sysinfo", "-c", str(cfg), write(tmp_path, "s.json", "{}"), "--interval", "3"])
    assert exc.value.code == 2
    assert "give a FILE or field flags (--enabled, --topic, --interval, --format), not both" in capsys.readouterr().err


# What crashed `config set-collect --dry-run` (or slipped through it) before validation was total.
CRASHERS = {
    "fields >= 2^64": '[{"path": "/var/log/a.log", "topic": "t", "fields": {"n": 18446744073709551616}}]',
    "fields 300 deep": json.dumps([{"path": "/var/log/a.log", "topic": "t",
                                    "fields": {"d": json.loads("[" * 300 + "]" * 300)}}]),
    "max_lines NaN": '[{"path": "/var/log/a.log", "topic": "t", "multiline": {"preset": "go", "max_lines": NaN}}]',
    "200,000 deep": "[" * 200_000 + "]" * 200_000,
    "lone surrogate": '[{"path": "/var/log/a.log", "topic": "t", "fields": {"x": "\\udcff"}}]',
    "idna": '[{"path": "/var/log/a.log", "topic": "t", "encoding": "idna"}]',
    "internal topic": '[{"path": "/var/log/a.log", "topic": "__consumer_offsets"}]',
    "null": "null",
}


@pytest.mark.parametrize("name", sorted(CRASHERS))
def test_set_collect_refuses_every_crasher_with_exit_2(tmp_path: Path, cfg: Path,
                                                       capsys: pytest.CaptureFixture[str], name: str) -> None:
    code = main(["config", "set-collect", "-c", str(cfg), "--dry-run", write(tmp_path, "v.json", CRASHERS[name])])
    err = capsys.readouterr().err
    assert code == 2 and KEY in err and "nothing written" in err, err


@pytest.mark.parametrize("text", ['{"interval": NaN}', '{"a": ' * 100_000 + "1" + "}" * 100_000,
                                  '{"topic": "__consumer_offsets"}', '{"topic": "\\udcff"}'])
def test_set_sysinfo_refuses_every_crasher_with_exit_2(tmp_path: Path, cfg: Path,
                                                       capsys: pytest.CaptureFixture[str], text: str) -> None:
    assert main(["config", "set-sysinfo", "-c", str(cfg), write(tmp_path, "s.json", text)]) == 2
    assert "/logagent/10.0.0.5/collect_sysinfo/config" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(CRASHERS))
def test_pretty_shows_any_stored_value(name: str) -> None:
    lines = _pretty(CRASHERS[name].encode())
    assert lines and "".join(lines).encode("utf-8")  # printable as UTF-8 (a lone surrogate is escaped)
    assert _pretty(b'[{"a": "\\udcff"}]') == ["[\n", "  {\n", '    "a": "\\udcff"\n', "  }\n", "]\n"]
    assert _pretty(b"\xff\xfe[") == ["\ufffd\ufffd[\n"]
