"""CLI exit codes: 0 ok, 1 a check failed, 2 bad configuration; one line, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from logagent import __version__


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
