"""The status server: /metrics, /healthz, /readyz over a real socket."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from logagent.http import StatusServer


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_endpoints():
    state = {"ready": False}

    async def body() -> None:
        server = StatusServer("127.0.0.1:0", lambda: (state["ready"], "ready" if state["ready"] else "not ready: x"))
        await server.start()
        port = server.port
        status, text = await asyncio.to_thread(_get, port, "/metrics")
        assert status == 200 and "logagent_queue_capacity" in text
        assert await asyncio.to_thread(_get, port, "/healthz") == (200, "ok\n")
        assert await asyncio.to_thread(_get, port, "/readyz") == (503, "not ready: x\n")
        state["ready"] = True
        assert await asyncio.to_thread(_get, port, "/readyz") == (200, "ready\n")
        assert (await asyncio.to_thread(_get, port, "/nope"))[0] == 404
        await server.stop()
        await server.stop()

    asyncio.run(body())
