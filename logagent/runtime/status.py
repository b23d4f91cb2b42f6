"""The agent's own HTTP endpoints: /metrics (Prometheus), /healthz, /readyz, and /files (each reader
of a file, where it is and what it waits for, as JSON).

A few lines of asyncio instead of a web framework: four GET routes, no bodies in. The listener
may face untrusted clients (the container image listens on 0.0.0.0): a request head larger than
64 KiB gets 431, a malformed one 400, a slow one is dropped after 5 s, each without a log line.
/metrics is rendered in a worker thread of its own: generate_latest() takes tens of milliseconds
at thousands of files (~900 KiB of text) and would stall every tailer if it ran on the loop, and
the default executor may be busy with Kafka probes and etcd calls (all of them waiting out a
timeout during an outage, just when the metrics are wanted).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from logagent.errors import LogagentError
from logagent.runtime import metrics

log = logging.getLogger("logagent.http")

ReadyCheck = Callable[[], tuple[bool, str]]
FilesView = Callable[[], list[Any]]  # JSON-able rows, one per reader (TailerManager.status)

HEAD_LIMIT = 64 * 1024  # bytes of request line + headers; larger gets 431
REQUEST_TIMEOUT = 5.0  # seconds for a client to send its request head
DISCARD_LIMIT = 1024 * 1024  # after a 431, bytes read and dropped so the close is not a reset
FILES_EVERY = 1.0  # seconds: /files is taken at most this often, its answer reused meanwhile


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "address already in use (another logagent, or another service, holds the port)"
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno).lower()
    return str(exc)


class StatusServer:
    """Serves /metrics, /healthz, /readyz and /files on host:port (`[agent] http_listen`, split by the
    config)."""

    def __init__(self, host: str, port: int, ready: ReadyCheck, files: FilesView | None = None) -> None:
        self.host, self.port = host.strip("[]"), port
        self.listen = f"{host}:{port}"
        self._ready = ready
        self._files = files
        self._files_body: tuple[float, bytes] = (-1e9, b"")  # (time.monotonic(), the JSON) last taken
        self._server: asyncio.base_events.Server | None = None
        self._rendering: asyncio.Future[bytes] | None = None
        self._renderer: ThreadPoolExecutor | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen; LogagentError naming [agent] http_listen when the address cannot be had."""
        if self._server is not None:
            return
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=HEAD_LIMIT)
        except OSError as exc:  # EADDRINUSE, EADDRNOTAVAIL, EACCES, a name that does not resolve
            raise LogagentError(f"[agent] http_listen = {self.listen}: cannot listen: {_reason(exc)}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("serving /metrics /healthz /readyz /files on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening, end the requests in progress, let the render thread go. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        renderer, self._renderer = self._renderer, None
        if renderer is not None:
            renderer.shutdown(wait=False, cancel_futures=True)

    async def render_metrics(self) -> bytes:
        """generate_latest() in the server's own render thread (prometheus_client's registry and
        metrics take their locks, so rendering beside the loop's updates is safe). One render at a
        time: scrapes that arrive while one runs share its result, so a burst of scrapes costs one
        render."""
        if self._rendering is None:
            metrics.flush()  # the counts kept per line since the last render (runtime/metrics.py)
            if self._renderer is None:
                self._renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="logagent-metrics")
            future = asyncio.get_running_loop().run_in_executor(self._renderer, generate_latest)
            self._rendering = future

            def done(_: asyncio.Future[bytes]) -> None:
                if self._rendering is future:
                    self._rendering = None

            future.add_done_callback(done)
        # shield: a client that goes away must not cancel the render the others wait for.
        return await asyncio.shield(self._rendering)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            try:
                request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            except asyncio.LimitOverrunError:
                await self._respond(writer, "431 Request Header Fields Too Large", "text/plain",
                                    b"request head larger than 64 KiB\n")
                await self._discard(reader)
                return
            parts = request.split(b" ", 2)
            if len(parts) < 3:
                await self._respond(writer, "400 Bad Request", "text/plain", b"bad request\n")
                return
            method, target = parts[0], parts[1]
            path = target.split(b"?", 1)[0].decode("latin-1")
            if method not in (b"GET", b"HEAD"):
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, await self.render_metrics()
            elif path == "/healthz":
                status, ctype, body = "200 OK", "text/plain", b"ok\n"
            elif path == "/readyz":
                ok, why = self._ready()
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype, body = "text/plain", (why + "\n").encode()
            elif path == "/files" and self._files is not None:
                status, ctype, body = "200 OK", "application/json", self._files_json()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            await self._respond(writer, status, ctype, body, head_only=method == b"HEAD")
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away or never finished its request: nothing to answer
        except asyncio.CancelledError:
            # stop(): end quietly. Re-raising would make asyncio's stream callback (3.11) log a
            # traceback for the cancelled task; this task is a leaf nobody else awaits.
            pass
        except Exception:  # a bug here must answer 500, not kill the connection silently
            log.exception("/metrics /healthz /readyz /files: request failed")
            try:
                await self._respond(writer, "500 Internal Server Error", "text/plain", b"internal error\n")
            except (ConnectionError, RuntimeError):
                pass
        finally:
            writer.close()
            if task is not None:
                self._handlers.discard(task)

    def _files_json(self) -> bytes:
        """The readers' rows as JSON, taken on the loop (their state is the loop's): ~3 us a file, 30 ms
        at 10,000. At most once a FILES_EVERY, so that clients asking in a loop cannot stall the tailers."""
        taken, body = self._files_body
        now = time.monotonic()
        if now - taken >= FILES_EVERY and self._files is not None:
            rows = self._files()
            body = orjson.dumps({"count": len(rows), "files": rows}, option=orjson.OPT_INDENT_2) + b"\n"
            self._files_body = (now, body)
        return body

    @staticmethod
    async def _respond(writer: asyncio.StreamWriter, status: str, ctype: str, body: bytes,
                       head_only: bool = False) -> None:
        head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        writer.write(head + (b"" if head_only else body))
        await writer.drain()

    @staticmethod
    async def _discard(reader: asyncio.StreamReader) -> None:
        """Read and drop what the client still sends (up to 1 MiB, 1 s): closing with unread
        bytes makes the kernel send a reset, and the client may then never see our answer."""
        left = DISCARD_LIMIT
        try:
            async with asyncio.timeout(1.0):
                while left > 0:
                    chunk = await reader.read(min(left, 65536))
                    if not chunk:
                        return
                    left -= len(chunk)
        except (TimeoutError, ConnectionError):
            pass
