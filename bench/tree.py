"""For the side-by-side scripts (entries_idle.py, kill9_dups.py): the test kit of the tree to measure
(this one, or a checkout of an older commit, whose tests had tests/support.py instead), and a scratch
folder of logs."""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

NAMES = ("AgentProcess", "KafkaReader", "LineWriter", "new_topic", "write_config", "read_all", "tally")


def load_kit(root: Path) -> SimpleNamespace:
    """The kit's helpers, imported from `root`'s tests (the agent they start is `root`'s too)."""
    sys.path.insert(0, str(root))
    try:
        kit = importlib.import_module("tests.kit")
        return SimpleNamespace(**{name: getattr(kit, name) for name in NAMES})
    except ImportError:  # a tree from before the test kit (e.g. the landed code, to compare)
        support = importlib.import_module("tests.support")
        helpers = importlib.import_module("tests.integration.faults.helpers")
        return SimpleNamespace(**{name: getattr(support, name, None) or getattr(helpers, name) for name in NAMES})


def scratch_logs() -> tuple[Path, Path]:
    """(a new temporary folder, its logs/ subfolder)."""
    tmp = Path(tempfile.mkdtemp())
    logs = tmp / "logs"
    logs.mkdir()
    return tmp, logs
