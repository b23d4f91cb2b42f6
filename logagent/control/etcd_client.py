"""Blocking etcd access for the agent and the CLI, on top of pyetcd.

Everything here blocks on gRPC: the agent calls it through ``asyncio.to_thread``.
pyetcd errors (grpc.RpcError, Etcd3Exception, a "failed node" ValueError, unreadable
certificate files) are converted to EtcdError at this boundary. Watch responses,
which pyetcd hands to a callback on its own thread, are turned into plain
``WatchBatch`` / ``WatchLost`` values so the rest of the agent never sees pyetcd.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from logagent.config.settings import EtcdSettings
from logagent.config.values import split_host_port
from logagent.errors import ConfigError, EtcdError

# Keepalive pings find a dead etcd (no RST, e.g. a partition) within ~15 s; etcd's
# default --grpc-keepalive-min-time is 5 s, so 10 s is allowed.
GRPC_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    # gRPC's default 4 MiB would turn an oversized value into a lost watch and a reconnect loop;
    # received (bounded here), it is refused by size with a clear error like any bad value.
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


@dataclass(frozen=True)
class Snapshot:
    """Values of some keys (and of every key under some prefixes) read at one revision; None: the
    key is not set. mod_revisions: the revision each value was written at."""

    revision: int
    values: dict[str, bytes | None]
    mod_revisions: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyValue:
    """One key as a range read returns it; version: how many times it was written since created."""

    key: str
    value: bytes
    mod_revision: int
    version: int


@dataclass(frozen=True)
class WatchEvent:
    """One change of a watched key: value None means it was deleted."""

    key: str
    value: bytes | None
    revision: int


@dataclass(frozen=True)
class WatchBatch:
    """Changes etcd sent in one watch response (possibly none: a progress notice)."""

    key: str
    events: tuple[WatchEvent, ...]
    revision: int


@dataclass(frozen=True)
class WatchLost:
    """The watch of `key` ended: etcd went away, or its revision was compacted."""

    key: str
    reason: str
    compacted: int = 0


WatchItem = WatchBatch | WatchLost
WatchCallback = Callable[[WatchItem], None]


def describe_error(exc: BaseException) -> str:
    """A one-line reason for an etcd failure (gRPC status and details when there are)."""
    # pyetcd re-raises gRPC errors as bare exceptions; the gRPC error it hides says why.
    inner = exc.__context__
    if inner is not None and not callable(getattr(exc, "details", None)) and callable(getattr(inner, "details", None)):
        exc = inner
    code = getattr(exc, "code", None)
    details = getattr(exc, "details", None)
    if callable(code) and callable(details):
        try:
            name = getattr(code(), "name", str(code()))
            return f"{name}: {details()}"
        except Exception:  # noqa: BLE001 - a half-built RpcError; fall back to its text
            pass
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def split_endpoint(address: str) -> tuple[str, int]:
    """'host:port' (or '[v6]:port') into host and port."""
    try:
        return split_host_port(address)
    except ValueError as exc:
        raise ConfigError(f"[etcd] address {address!r}: expected {exc}") from None


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise EtcdError(f"cannot read [etcd] {what} {path}: {exc.strerror or exc}") from exc


def _credentials(settings: EtcdSettings) -> Any | None:
    """TLS channel credentials from ca_cert / cert_cert / cert_key; None for plain text."""
    if bool(settings.cert_cert) != bool(settings.cert_key):
        raise ConfigError("[etcd] cert_cert and cert_key must be set together (TLS client auth)")
    if not (settings.ca_cert or settings.cert_cert):
        return None
    import grpc

    # Without ca_cert the system's roots verify etcd's certificate.
    return grpc.ssl_channel_credentials(
        root_certificates=_read(settings.ca_cert, "ca_cert") if settings.ca_cert else None,
        private_key=_read(settings.cert_key, "cert_key") if settings.cert_key else None,
        certificate_chain=_read(settings.cert_cert, "cert_cert") if settings.cert_cert else None,
    )


# A thread blocked reading a gRPC stream (pyetcd's watch thread, the lease keep-alive's reader) waits
# in slices of grpc._common.MAXIMUM_WAIT_TIMEOUT, 0.1 s, taking the GIL 10 times a second while nothing
# happens. A response still wakes it at once, and a timeout given to a call is still kept to the
# millisecond (a slice is never longer than the time left); the slices are only how often a waiting
# thread looks in vain, and ours are never the main thread that signals interrupt. 1 s: 1,000
# simulated hosts' idle CPU went from 84 to 42 % of a core (bench/fleet_scale.py, bench/RESULTS.md).
GRPC_WAIT_SLICE = 1.0


def _calm_grpc_waits() -> None:
    """Lengthen gRPC's wait slice (see GRPC_WAIT_SLICE), once; a gRPC without it is left alone."""
    import grpc._common as grpc_common

    if getattr(grpc_common, "MAXIMUM_WAIT_TIMEOUT", None) == 0.1:
        grpc_common.MAXIMUM_WAIT_TIMEOUT = GRPC_WAIT_SLICE


class EtcdClient:
    """One connection to etcd (one gRPC channel per endpoint). Blocking; not reused after close()."""

    def __init__(self, settings: EtcdSettings, timeout: float | None = None) -> None:
        import pyetcd

        _calm_grpc_waits()

        if not settings.address:
            raise ConfigError("[etcd] address is empty")
        self.timeout = timeout if timeout is not None else settings.timeout
        self.address = ",".join(settings.address)
        creds = _credentials(settings)
        endpoints = []
        for address in settings.address:
            host, port = split_endpoint(address)
            # time_retry: a failed endpoint is skipped for a while, the next one is tried.
            endpoints.append(pyetcd.Endpoint(host, port, secure=creds is not None, creds=creds,
                                             time_retry=self.timeout, opts=GRPC_OPTIONS))
        self._lock = threading.Lock()
        self._closed = False
        self._watcher: Any = None
        self._keepalive: _KeepAliveStream | None = None
        self._keepalive_lock = threading.Lock()
        try:
            self._client = pyetcd.MultiEndpointEtcd3Client(
                endpoints=endpoints, timeout=self.timeout,
                user=settings.username or None, password=settings.password or None,
                failover=len(endpoints) > 1)
        except Exception as exc:
            for ep in endpoints:
                ep.close()
            raise EtcdError(f"etcd {self.address}: cannot connect: {describe_error(exc)}") from exc
        # pyetcd sends the auth token both as call credentials and as metadata; gRPC
        # refuses call credentials on a plain-text channel, and the metadata suffices.
        self._client.call_credentials = None

    # ---- requests

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        if self._closed:
            raise EtcdError(f"etcd {self.address}: client is closed")
        attempts = max(1, len(self._client.endpoints))
        for attempt in range(attempts):
            try:
                return fn()
            except Exception as exc:
                if attempt + 1 < attempts and _failover_worthy(exc):
                    continue  # pyetcd marked that endpoint failed; the next call uses another
                raise EtcdError(f"etcd {self.address}: {what}: {describe_error(exc)}") from exc

    def read(self, keys: Sequence[str], prefixes: Sequence[str] = ()) -> Snapshot:
        """The values of `keys` and of every key under `prefixes`, all at one revision (the current one)."""
        # A keys-only read fixes the revision; the values are then read at that revision,
        # so the snapshot is consistent and a watch from revision + 1 misses nothing.
        first = keys[0] if keys else prefixes[0]
        head = self._call("read", lambda: self._client.get_response(first, keys_only=True))
        revision = int(head.header.revision)
        values: dict[str, bytes | None] = {}
        mods: dict[str, int] = {}
        for key in keys:
            resp = self._call(f"read {key}", functools.partial(self._client.get_response, key, revision=revision))
            values[key] = bytes(resp.kvs[0].value) if resp.count > 0 and resp.kvs else None
            if values[key] is not None:
                mods[key] = int(resp.kvs[0].mod_revision)
        for prefix in prefixes:
            for key, value, mod in self._range(prefix, revision):
                values[key], mods[key] = value, mod
        return Snapshot(revision, values, mods)

    def _range(self, prefix: str, revision: int | None = None) -> list[tuple[str, bytes, int]]:
        resp = self._call(f"read {prefix}*", functools.partial(
            self._client.get_prefix_response, prefix, **({"revision": revision} if revision else {})))
        return [(bytes(kv.key).decode("utf-8", "replace"), bytes(kv.value), int(kv.mod_revision)) for kv in resp.kvs]

    def read_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]:
        """(revision, every key under `prefix` with its value, mod revision and version) in one request."""
        resp = self._call(f"read {prefix}*", functools.partial(self._client.get_prefix_response, prefix))
        return int(resp.header.revision), [KeyValue(bytes(kv.key).decode("utf-8", "replace"), bytes(kv.value),
                                                    int(kv.mod_revision), int(kv.version)) for kv in resp.kvs]

    def get(self, key: str) -> tuple[bytes | None, int]:
        """(value or None, revision of the read)."""
        snap = self.read([key])
        return snap.values[key], snap.revision

    def put(self, key: str, value: bytes | str, lease: int = 0) -> int:
        """Write a value (attached to `lease` when not 0); returns the new revision."""
        resp = self._call(f"put {key}", lambda: self._client.put(key, value, lease=lease or None))
        return int(resp.header.revision)

    def put_if(self, key: str, value: bytes | str, mod_revision: int,
               also: Sequence[tuple[str, bytes | str]] = ()) -> int | None:
        """Write `key` (and the `also` pairs, in the same transaction) only if `key` was last written
        at `mod_revision` (0: if it does not exist); the new revision, or None when it changed meanwhile."""
        client = self._client
        compare = [client.transactions.mod(key) == mod_revision] if mod_revision else \
            [client.transactions.version(key) == 0]
        ops = [client.transactions.put(key, value)] + [client.transactions.put(k, v) for k, v in also]
        ok, _ = self._call(f"put {key}", lambda: client.transaction(compare=compare, success=ops, failure=[]))
        if not ok:
            return None
        return self.read([key]).mod_revisions.get(key)  # pyetcd hides the transaction's own header

    def delete(self, key: str) -> bool:
        return bool(self._call(f"delete {key}", lambda: self._client.delete(key)))

    # ---- leases (the status key)

    def grant(self, ttl: int) -> int:
        """A new lease of `ttl` seconds; its id."""
        return int(self._call("lease grant", lambda: self._client.lease(ttl)).id)

    def keepalive(self, lease: int) -> int:
        """Refresh a lease; the TTL left (0: the lease is gone, expired or revoked).

        One LeaseKeepAlive stream is kept open and reused, as etcd's own clients do: pyetcd's
        refresh_lease opens a stream (and a thread) per refresh, which at a thousand hosts per
        machine (the benchmark) cost more than everything else the control plane does when idle."""
        if self._closed:
            raise EtcdError(f"etcd {self.address}: client is closed")
        with self._keepalive_lock:
            if self._keepalive is None:
                try:
                    self._keepalive = _KeepAliveStream(self._client)
                except Exception as exc:
                    raise EtcdError(f"etcd {self.address}: lease keepalive: {describe_error(exc)}") from exc
            stream = self._keepalive
            try:
                return stream.refresh(lease, self.timeout)
            except Exception as exc:
                self._keepalive = None
                stream.close()
                raise EtcdError(f"etcd {self.address}: lease keepalive: {describe_error(exc)}") from exc

    def revoke(self, lease: int) -> None:
        self._call("lease revoke", lambda: self._client.revoke_lease(lease))

    # ---- watches

    def watch(self, keys: Sequence[str], start_revision: int, callback: WatchCallback,
              prefixes: Sequence[str] = ()) -> None:
        """Watch each key, and each prefix as a whole, from start_revision; callback runs on pyetcd's
        watch thread (one gRPC stream for all of them).

        Every key's (and prefix's) watch ends with exactly one WatchLost (unless close() came first).
        """
        from pyetcd import utils

        if self._watcher is None:
            try:
                self._watcher = self._client.get_watcher()
            except Exception as exc:
                raise EtcdError(f"etcd {self.address}: watch: {describe_error(exc)}") from exc
        ranges = [(key, None) for key in keys] + [(p, utils.prefix_range_end(p.encode())) for p in prefixes]
        for key, range_end in ranges:
            try:
                self._watcher.add_callback(key, self._adapter(key, callback), range_end=range_end,
                                           start_revision=start_revision)
            except Exception as exc:
                raise EtcdError(f"etcd {self.address}: watch {key}: {describe_error(exc)}") from exc

    def _adapter(self, key: str, callback: WatchCallback) -> Callable[[Any], None]:
        from pyetcd import events, exceptions

        lost = [False]

        def on_response(item: Any) -> None:
            if self._closed or lost[0]:
                return  # our own close() cancels the stream: not news
            if isinstance(item, exceptions.RevisionCompactedError):
                lost[0] = True
                callback(WatchLost(key, f"revision compacted up to {item.compacted_revision}",
                                   compacted=int(item.compacted_revision)))
            elif isinstance(item, BaseException) or item is None:
                lost[0] = True
                callback(WatchLost(key, describe_error(item) if item is not None else "watch stream ended"))
            else:
                batch = tuple(WatchEvent(bytes(ev.key).decode("utf-8", "replace"),
                                         None if isinstance(ev, events.DeleteEvent) else bytes(ev.value),
                                         int(ev.mod_revision)) for ev in item.events)
                callback(WatchBatch(key, batch, int(item.header.revision)))

        return on_response

    def close(self) -> None:
        """Cancel watches, close the channels and wait for pyetcd's watch thread; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        watcher, self._watcher = self._watcher, None
        keepalive, self._keepalive = self._keepalive, None
        if keepalive is not None:
            keepalive.close()
        thread = getattr(watcher, "_callback_thread", None) if watcher is not None else None
        try:
            if watcher is not None:
                watcher.close()  # ends the request stream
            self._client.close()  # closing the channel cancels the response stream
        except Exception:  # noqa: BLE001 - closing never fails the caller
            pass
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Deadlines:
    """One thread per process that cancels blocking gRPC reads past their deadline (a keep-alive's
    answer that never comes), instead of a timer thread per call."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, Any]] = []
        self._seq = 0
        self._thread: threading.Thread | None = None

    def add(self, deadline: float, call: Any) -> int:
        import heapq

        with self._cond:
            self._seq += 1
            heapq.heappush(self._due, (deadline, self._seq, call))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="etcd-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()
            return self._seq

    def done(self, seq: int) -> None:
        with self._cond:
            self._due = [item for item in self._due if item[1] != seq]
            import heapq

            heapq.heapify(self._due)

    def _run(self) -> None:
        import heapq
        import time

        while True:
            with self._cond:
                while not self._due:
                    self._cond.wait()
                deadline, _, call = self._due[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._due)
            try:
                call.cancel()
            except Exception:  # noqa: BLE001 - a call that ended meanwhile
                pass


_DEADLINES = _Deadlines()


class _KeepAliveStream:
    """One open LeaseKeepAlive stream: a request is queued and its answer read by the caller, with
    the read cancelled (stream and all) when it takes longer than the timeout."""

    def __init__(self, client: Any) -> None:
        import queue

        from pyetcd.etcdrpc import LeaseKeepAliveRequest

        self._request_type = LeaseKeepAliveRequest
        self._requests: queue.Queue[Any] = queue.Queue()
        self._call = client.leasestub.LeaseKeepAlive(iter(self._requests.get, None), metadata=client.metadata)

    def refresh(self, lease: int, timeout: float) -> int:
        import time

        self._requests.put(self._request_type(ID=lease))
        seq = _DEADLINES.add(time.monotonic() + timeout, self._call)
        try:
            answer = next(self._call)
        except StopIteration:
            raise EtcdError("lease keepalive stream ended") from None
        finally:
            _DEADLINES.done(seq)
        return int(answer.TTL)

    def close(self) -> None:
        self._requests.put(None)
        try:
            self._call.cancel()
        except Exception:  # noqa: BLE001 - closing never fails the caller
            pass


def _failover_worthy(exc: BaseException) -> bool:
    from pyetcd import exceptions

    return isinstance(exc, (exceptions.ConnectionFailedError, exceptions.ConnectionTimeoutError,
                            exceptions.InternalServerError))


def connect(settings: EtcdSettings, timeout: float | None = None) -> EtcdClient:
    """A new client; authenticates when a username is set. Raises EtcdError."""
    return EtcdClient(settings, timeout)

