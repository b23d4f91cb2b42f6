"""The image's HEALTHCHECK: GET /healthz on the address the agent really listens on.

The address comes from LOGAGENT_AGENT_HTTP_LISTEN, which the image sets (0.0.0.0:9798)
and which wins over any config file, so a container run with another port is checked on
that port, not on a hard-coded 9798. A wildcard host (0.0.0.0, ::, empty) is asked on
loopback. Exit 0 healthy, 1 not. With the HTTP server turned off (empty value) there is
nothing to ask: the check passes, since Docker only runs it while the process lives.
Standard library only: the agent's own modules are not imported, so a check costs ~50 ms.
"""

from __future__ import annotations

import os
import sys
import urllib.request

WILDCARD = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def healthz_url(listen: str) -> str:
    """http://host:port/healthz for an http_listen value host:port ([v6]:port too)."""
    host, sep, port = listen.strip().rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"LOGAGENT_AGENT_HTTP_LISTEN={listen!r} is not host:port")
    host = host.strip("[]")
    host = WILDCARD.get(host, host)
    return f"http://[{host}]:{port}/healthz" if ":" in host else f"http://{host}:{port}/healthz"


def main() -> int:
    listen = os.environ.get("LOGAGENT_AGENT_HTTP_LISTEN", "0.0.0.0:9798")
    if not listen.strip():
        print("http_listen is empty: no /healthz to ask")
        return 0
    try:
        url = healthz_url(listen)
        with urllib.request.urlopen(url, timeout=4) as resp:
            ok = resp.status == 200
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {exc}")
        return 1
    print(f"{url}: {'ok' if ok else 'not ok'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
