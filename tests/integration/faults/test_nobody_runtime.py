"""The runtime from which the fault suite runs the agent as nobody (tests/integration/faults/helpers.py) works
wherever the clone lives: nobody imports the agent from a world-readable copy, never from the
checkout, with the system's interpreter or with a copy of the venv's own (issue 15)."""

from __future__ import annotations

import os
import sys

import pytest

from tests.integration.faults.helpers import NobodyRuntime, _copy_interpreter, nobody_ids, nobody_runtime
from tests.kit import ROOT

PROBE = ("import os, sys, logagent.agent, confluent_kafka, psutil; "
         "print(os.getuid(), logagent.agent.__file__, sys.version_info[:2])")


@pytest.fixture
def runtime() -> NobodyRuntime:
    return nobody_runtime()  # skips, with the reason, where nothing can run as nobody


def test_nobody_imports_the_agent_from_the_copy(runtime):
    done = runtime.run("-c", PROBE)
    assert done.returncode == 0, done.stderr[-800:]
    uid, path, version = done.stdout.split(" ", 2)
    assert int(uid) == nobody_ids()[0]
    assert path.startswith(str(runtime.home)) and not path.startswith(str(ROOT))
    assert version.strip() == str(tuple(sys.version_info[:2]))
    # Everything nobody needs is readable by others: nothing hangs on this checkout's permissions.
    for folder, _, files in os.walk(runtime.home / "site" / "logagent"):
        assert os.stat(folder).st_mode & 0o005 == 0o005, folder
        for name in files:
            assert os.stat(os.path.join(folder, name)).st_mode & 0o004, name


def test_a_copy_of_the_venv_interpreter_runs_as_nobody(runtime):
    """The fallback when no interpreter of this version is runnable by nobody (a pyenv python
    under /root and no system python3.X): a copy of the interpreter and its standard library."""
    python, extra = _copy_interpreter(runtime.home / "python-copy-test")
    copied = NobodyRuntime(python, runtime.home, dict(runtime.env, **extra))
    done = copied.run("-c", "import sys; " + PROBE + "; print(sys.executable)")
    assert done.returncode == 0, done.stderr[-800:]
    assert done.stdout.strip().endswith(python)

