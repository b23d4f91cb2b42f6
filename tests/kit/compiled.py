"""The agent's C modules in tests: `make setup` builds them (gcc and Python's headers, installed by
devstack/system-deps.sh), so in CI a test of one that is not built fails; elsewhere it is skipped,
saying why."""

from __future__ import annotations

import os

import pytest


def need_compiled(why_not: str, what: str) -> None:
    """Fail (CI) or skip the calling test when `why_not` says `what` cannot run ("" when it can)."""
    if not why_not:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} cannot run: {why_not}")
    pytest.skip(f"{what} cannot run: {why_not}")
