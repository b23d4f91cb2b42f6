"""systemd's notify protocol (Type=notify): READY=1 once collecting, STOPPING=1 at shutdown.

A datagram to $NOTIFY_SOCKET is all the protocol asks; libsystemd is not needed for that.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("logagent.systemd")


def sd_notify(state: str) -> None:
    """Tell systemd our state through $NOTIFY_SOCKET; a no-op when it is not set (not under
    systemd, or a unit that is not Type=notify). A socket that fails is logged, not raised:
    the agent collects the same with or without systemd listening."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(addr)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)
