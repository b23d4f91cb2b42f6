"""For the side-by-side scripts (entries_idle.py, kill9_dups.py): the harness of the tree to measure
(this one, or a checkout of an older commit, whose harness was still in tests/kit), and a scratch
folder of logs."""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

NAMES = ("AgentProcess", "KafkaReader", "LineWriter", "new_topic", "write_config", "read_all", "tally")


def load_kit(root: Path) -> SimpleNamespace:
    """The harness's helpers, imported from `root` (the agent they start is `root`'s too)."""
    sys.path.insert(0, str(root))
    modules = ("devstack.agentproc", "devstack.kafkaread", "devstack.delivery")
    try:
        found = [importlib.import_module(name) for name in modules]
    except ImportError:  # an older tree, whose harness lived in its test kit
        found = [importlib.import_module("tests.kit")]
    return SimpleNamespace(**{name: next(getattr(m, name) for m in found if hasattr(m, name)) for name in NAMES})


def scratch_logs() -> tuple[Path, Path]:
    """(a new temporary folder, its logs/ subfolder)."""
    tmp = Path(tempfile.mkdtemp())
    logs = tmp / "logs"
    logs.mkdir()
    return tmp, logs
