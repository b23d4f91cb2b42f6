"""The status server: /metrics, /healthz, /readyz over a real socket; hostile requests; the loop
stays free while /metrics renders."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily

import logagent.runtime.metrics  # noqa: F401  (registers the agent's metrics that /metrics must show)
from logagent.errors import LogagentError
from logagent.runtime import status as status_module
from logagent.runtime.status import StatusServer
from tests.kit import http_get


def _get(port: int, path: str) -> tuple[int, str]:
    return http_get(f"http://127.0.0.1:{port}{path}", timeout=5)


def _raw(port: int, request: bytes, timeout: float = 5.0, half_close: bool = False) -> bytes:
    """Send raw bytes (then end our side when half_close), return all the server answers until
    it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


class LoopErrors:
    """Everything the event loop's exception handler and the asyncio/logagent loggers report."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.contexts: list[dict] = []  # type: ignore[type-arg]
        loop.set_exception_handler(lambda _loop, ctx: self.contexts.append(ctx))


async def test_endpoints():
    state = {"ready": False}

    server = StatusServer("127.0.0.1", 0, lambda: (state["ready"], "ready" if state["ready"] else "not ready: x"))
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


async def test_files_lists_what_the_view_gives_as_json_and_is_absent_without_one(monkeypatch: pytest.MonkeyPatch):
    rows = [{"path": "/var/log/a.log", "acked": 4}]
    server = StatusServer("127.0.0.1", 0, lambda: (True, "ready"), files=lambda: rows)
    await server.start()
    status, text = await asyncio.to_thread(_get, server.port, "/files")
    assert status == 200 and json.loads(text) == {"count": 1, "files": rows}
    rows.append({"path": "/var/log/b.log", "acked": 0})
    assert json.loads((await asyncio.to_thread(_get, server.port, "/files"))[1])["count"] == 1, \
        "taken at most once a second: the same answer within it"
    monkeypatch.setattr(status_module, "FILES_EVERY", 0.0)
    assert json.loads((await asyncio.to_thread(_get, server.port, "/files"))[1])["count"] == 2
    await server.stop()
    bare = StatusServer("127.0.0.1", 0, lambda: (True, "ready"))
    await bare.start()
    assert (await asyncio.to_thread(_get, bare.port, "/files"))[0] == 404
    await bare.stop()


async def test_huge_header_gets_431_quietly(caplog):
    """A 200 KB header: 431, the connection closed, no traceback in the agent's log (the old code
    let readuntil's LimitOverrunError escape the handler, once per request)."""
    caplog.set_level(logging.DEBUG)

    errors = LoopErrors(asyncio.get_running_loop())
    server = StatusServer("127.0.0.1", 0, lambda: (True, "ready"))
    await server.start()
    big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    for half_close in (False, True, True):  # a client that waits, and ones that end their side
        answer = await asyncio.to_thread(_raw, server.port, big, half_close=half_close)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    # Malformed request lines get 400, and the server still serves the next client.
    assert (await asyncio.to_thread(_raw, server.port, b"NONSENSE\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    assert await asyncio.to_thread(_get, server.port, "/healthz") == (200, "ok\n")
    await server.stop()
    await asyncio.sleep(0)
    assert errors.contexts == []
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert noisy == [], [r.getMessage() for r in noisy]


async def test_port_taken_is_one_error_naming_the_key_and_address():
    first = StatusServer("127.0.0.1", 0, lambda: (True, "ready"))
    await first.start()
    second = StatusServer("127.0.0.1", first.port, lambda: (True, "ready"))
    with pytest.raises(LogagentError) as caught:
        await second.start()
    await first.stop()
    message = str(caught.value)
    assert message.startswith(f"[agent] http_listen = 127.0.0.1:{first.port}: cannot listen: "), message
    assert "address already in use" in message and "\n" not in message


class SlowCollector:
    """A collector that takes `delay` seconds to collect, as the agent's metrics do at many files."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0
        self._lock = threading.Lock()

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily("logagent_test_slow_render", "a collector that takes time")]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        yield GaugeMetricFamily("logagent_test_slow_render", "a collector that takes time", value=1)


@pytest.fixture
def slow_collector() -> Iterator[SlowCollector]:
    collector = SlowCollector(0.5)
    REGISTRY.register(collector)  # type: ignore[arg-type]
    try:
        yield collector
    finally:
        REGISTRY.unregister(collector)  # type: ignore[arg-type]


async def test_metrics_render_off_the_loop(slow_collector):
    """A render that takes 0.5 s must not stall the loop: a ticker keeps ticking and /healthz
    answers at once meanwhile (the old code ran generate_latest() on the loop: a 0.5 s stall)."""

    server = StatusServer("127.0.0.1", 0, lambda: (True, "ready"))
    await server.start()
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    scrape = asyncio.create_task(asyncio.to_thread(_get, server.port, "/metrics"))
    while slow_collector.calls == 0:
        await asyncio.sleep(0.01)
    t0 = time.monotonic()
    assert await asyncio.to_thread(_get, server.port, "/healthz") == (200, "ok\n")
    healthz_took = time.monotonic() - t0
    status, text = await scrape
    stop.set()
    await tick
    await server.stop()
    assert status == 200 and "logagent_test_slow_render 1.0" in text
    assert healthz_took < 0.3, f"/healthz took {healthz_took:.2f} s while /metrics rendered"
    assert max(gaps) < 0.3, f"the loop stalled {max(gaps):.2f} s while /metrics rendered"


async def test_concurrent_scrapes_share_renders_and_all_get_the_full_text(slow_collector):
    """Ten scrapes at once: all 200 with the whole text, in about one render's time, using one
    render thread at a time (not ten threads of the default executor)."""

    server = StatusServer("127.0.0.1", 0, lambda: (True, "ready"))
    await server.start()
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(10) as clients:
        t0 = time.monotonic()
        answers = await asyncio.gather(*(loop.run_in_executor(clients, _get, server.port, "/metrics")
                                         for _ in range(10)))
        took = time.monotonic() - t0
    await server.stop()
    assert all(status == 200 and "logagent_queue_capacity" in text and "logagent_test_slow_render 1.0" in text
               for status, text in answers)
    # Scrapes that arrive during a render share it; a late one may start a second.
    assert slow_collector.calls <= 3, slow_collector.calls
    assert took < 3 * slow_collector.delay, f"10 scrapes took {took:.2f} s"


async def test_metrics_answer_while_the_default_executor_is_busy():
    """The Kafka probe and etcd calls use the default executor, and during an outage all of its
    threads may wait out timeouts: /metrics must not queue behind them."""

    loop = asyncio.get_running_loop()
    busy = ThreadPoolExecutor(1)
    loop.set_default_executor(busy)
    release = threading.Event()
    blocked = loop.run_in_executor(None, release.wait, 10)  # the one default thread is taken
    server = StatusServer("127.0.0.1", 0, lambda: (True, "ready"))
    await server.start()
    with ThreadPoolExecutor(1) as client:
        status, text = await loop.run_in_executor(client, _get, server.port, "/metrics")
    release.set()
    await blocked
    await server.stop()
    assert status == 200 and "logagent_queue_capacity" in text


async def test_render_in_a_thread_while_the_loop_adds_series():
    """The render thread reads the registry while the loop creates new labelled series (new files
    appear): every render succeeds and shows a consistent text."""
    counter = Counter("logagent_test_concurrent_series", "series created during renders", ["path"])
    server = StatusServer("127.0.0.1", 0, lambda: (True, "ready"))
    done = asyncio.Event()

    async def grow() -> None:
        i = 0
        while not done.is_set() and i < 5000:
            for _ in range(50):
                counter.labels(f"/var/log/f{i}.log").inc()
                i += 1
            await asyncio.sleep(0)

    try:
        await server.start()
        grower = asyncio.create_task(grow())
        try:
            renders = 0
            while not grower.done() or renders < 3:
                body_bytes = await server.render_metrics()
                assert body_bytes.endswith(b"\n")
                renders += 1
        finally:
            done.set()
            await grower
            await server.stop()
    finally:
        REGISTRY.unregister(counter)
