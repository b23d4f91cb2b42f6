"""A collected file as the agent identifies it."""

from __future__ import annotations

import os
from pathlib import Path

from logagent.sources.files.registry import fingerprint


def file_fingerprint(path: Path | str) -> tuple[str, int]:
    """(fingerprint, length) of the file now at `path`: what a tailer records of it when it opens it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return fingerprint(fd)
    finally:
        os.close(fd)
