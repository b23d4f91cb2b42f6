"""CLI exit codes: 0 ok, 1 a check failed, 2 bad configuration; one line, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from logagent import __version__
from tests.unit.config.test_settings import SECRET_PROPERTIES


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "logagent", *args], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, **(env or {})))


def test_version():
    out = _run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"logagent {__version__}"


def test_bad_config_exits_2_with_one_line(tmp_path: Path):
    cfg = tmp_path / "c.ini"
    cfg.write_text("[kafka]\nchan_size = abc\n")
    for cmd in ("run", "check"):
        out = _run(cmd, "-c", str(cfg))
        assert out.returncode == 2
        assert "Traceback" not in out.stderr
        assert out.stderr.strip().count("\n") == 0
        assert "[kafka] chan_size = 'abc'" in out.stderr


def test_missing_config_file_exits_2(tmp_path: Path):
    out = _run("run", "-c", str(tmp_path / "missing.ini"))
    assert out.returncode == 2 and "config file not found" in out.stderr


def test_check_fails_with_unreachable_kafka(tmp_path: Path):
    cfg = tmp_path / "c.ini"
    cfg.write_text("[kafka]\naddress = 127.0.0.1:1\n[etcd]\naddress =\n")
    out = _run("check", "-c", str(cfg), "--timeout", "2")
    assert out.returncode == 1
    assert "ok   config" in out.stdout
    assert "FAIL kafka: 127.0.0.1:1" in out.stdout


def test_check_of_a_file_that_is_not_ini_never_prints_its_content(tmp_path: Path):
    # `logagent check -c /etc/shadow` used to echo the first line (a password hash) in its error.
    shadow = tmp_path / "shadow"
    shadow.write_text("root:$6$fake-secret-salt$fake-secret-hash:19000:0:99999:7:::\n"
                      "daemon:*:19000:0:99999:7:::\n")
    out = _run("check", "-c", str(shadow))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == (f"logagent: config error: {shadow}:1: not a valid ini file: "
                                  "a line before the first [section] header")
    assert "fake-secret" not in out.stdout + out.stderr


def _check(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from logagent.cli.main import main

    code = main(["check", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("key", sorted(SECRET_PROPERTIES))
def test_check_never_prints_a_secret_property(tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str):
    value = SECRET_PROPERTIES[key].replace("\n", " ")
    cfg = tmp_path / "c.ini"
    cfg.write_text(f"[kafka]\naddress = 127.0.0.1:1\n[kafka.producer]\nsecurity.protocol = SASL_SSL\n"
                   f"sasl.mechanism = PLAIN\nsasl.username = u\n{key} = {value}\n[etcd]\naddress =\n"
                   "password = etcd-pw-15\n")
    code, text = _check(["-c", str(cfg), "--timeout", "0.3"], capsys)
    assert code == 1 and "FAIL kafka" in text
    for word in [*value.replace("=", " ").replace('"', " ").split(), "etcd-pw-15"]:
        if any(ch.isdigit() for ch in word):
            assert word not in text, (word, text)


def test_check_reports_collect_files_whose_folder_leads_outside_allowed_paths(tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture[str]):
    logs, outside = tmp_path / "logs", tmp_path / "elsewhere"
    logs.mkdir()
    outside.mkdir()
    (logs / "app").symlink_to(outside)
    (logs / "direct.log").symlink_to(outside / "x.log")
    (logs / "inside").symlink_to(logs)  # a symlink that stays inside is fine
    files = [{"path": f"{logs}/app/*.log", "topic": "t"}, {"path": f"{logs}/direct.log", "topic": "t"},
             {"path": f"{logs}/inside/ok.log", "topic": "t"}, {"path": f"{logs}/plain/**/*.log", "topic": "t"}]
    cfg = tmp_path / "c.ini"
    cfg.write_text(f"[kafka]\naddress = 127.0.0.1:1\n[etcd]\naddress =\n[agent]\nallowed_paths = {logs}/**\n"
                   f"[collect]\nfiles = {json.dumps(files)}\n")
    code, text = _check(["-c", str(cfg), "--timeout", "0.3"], capsys)
    line = next(line for line in text.splitlines() if line.startswith("FAIL collect:"))
    assert "[collect] files has 4 good entries" in line
    assert f"'{logs}/app/*.log': folder '{logs}/app' resolves through a symlink to a place outside" in line
    assert f"'{logs}/direct.log': path '{logs}/direct.log' resolves through a symlink" in line
    assert "inside/ok.log" not in line and "plain" not in line and str(outside) not in text
    assert code == 1


def test_check_strict_turns_warnings_into_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    cfg = tmp_path / "c.ini"
    cfg.write_text("[kafka]\nadress = 127.0.0.1:1\naddress = 127.0.0.1:1\n[etcd]\naddress =\n")
    _, text = _check(["-c", str(cfg), "--timeout", "0.3"], capsys)
    assert f"ok   config: warning: {cfg}: [kafka] adress: unknown key, ignored, did you mean address?" in text
    _, text = _check(["--strict", "-c", str(cfg), "--timeout", "0.3"], capsys)
    assert f"FAIL config: warning: {cfg}: [kafka] adress: unknown key, ignored, did you mean address?" in text


def test_check_output_is_one_line_per_part_whatever_the_config_file_is_named(tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture[str]):
    folder = tmp_path / "etc\nok   etcd: FORGED"
    folder.mkdir()
    cfg = folder / "c.ini"
    cfg.write_text("[kafka]\nadress = 127.0.0.1:1\naddress = 127.0.0.1:1\n[etcd]\naddress =\n")
    code, text = _check(["-c", str(cfg), "--timeout", "0.3"], capsys)
    assert code == 1
    assert not any(line.startswith("ok   etcd: FORGED") for line in text.splitlines()), text
    shown = f"{tmp_path}/etc\\x0aok   etcd: FORGED/c.ini"
    assert f"ok   config: {shown} is valid" in text
    assert f"ok   config: warning: {shown}: [kafka] adress: unknown key" in text
    assert f"ok   collect: {shown}: [collect] files is [] (nothing collected)" in text
