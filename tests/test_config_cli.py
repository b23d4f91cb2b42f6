"""`logagent config ...` without an etcd: validation comes first (exit 2, nothing sent),
an unreachable etcd is exit 1, and the diff shows what would change.
(Writing to a real etcd is in tests/integration/test_etcd.py.)"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from devstack.stack import free_port
from logagent.cli import main
from logagent.config_cli import _diff, _field_value

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
