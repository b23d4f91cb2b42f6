"""A fake kubelet for the tests and the benchmark: the pods of a node, their container logs under a
`/var/log/pods`-style tree written the way the container runtime and the kubelet write them, and
the kubelet's `/pods` endpoint.

- `Pod`, `PodTree`: pods with containers; CRI or Docker json-file records with partial records
  (a long line cut into P records, the other stream's records between them), the kubelet's
  rotation (`0.log` renamed to `0.log.<YYYYMMDD-hhmmss>`, the older rotated files gzipped to
  `.gz` through a `.gz.tmp`, the oldest deleted), container restarts (`1.log` beside `0.log`),
  pod folders deleted. Every line written is remembered, per container, for the tally.
- `KubeletServer`: `GET /pods` on loopback, a PodList of the pods it is given (labels, annotations),
  optionally behind a bearer token; it counts the requests.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CHUNK = 16  # bytes per partial record here (the runtimes cut at 16 KiB; small to make many)


def rfc3339(ts: float | None = None) -> str:
    """A CRI time: RFC 3339 with nanoseconds, UTC."""
    now = time.time() if ts is None else ts
    base = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{int((now % 1) * 1e9):09d}Z"


def cri_records(stream: str, text: str, chunk: int = CHUNK, ts: str | None = None) -> list[str]:
    """The CRI records of one line: P records of `chunk` bytes, then the F record with the rest."""
    stamp = ts or rfc3339()
    raw = text.encode()
    parts = [raw[i:i + chunk] for i in range(0, len(raw), chunk)] or [b""]
    out = []
    for i, part in enumerate(parts):
        tag = "F" if i == len(parts) - 1 else "P"
        out.append(f"{stamp} {stream} {tag} {part.decode('utf-8', 'surrogateescape')}\n")
    return out


def docker_records(stream: str, text: str, chunk: int = CHUNK, ts: str | None = None) -> list[str]:
    """The json-file records of one line: `log` without its newline until the last one."""
    stamp = ts or rfc3339()
    parts = [text[i:i + chunk] for i in range(0, len(text), chunk)] or [""]
    return [json.dumps({"log": part + ("\n" if i == len(parts) - 1 else ""), "stream": stream, "time": stamp}) + "\n"
            for i, part in enumerate(parts)]


@dataclass
class Container:
    name: str
    restart: int = 0
    written: list[tuple[int, str, str]] = field(default_factory=list)  # (restart, stream, line), as written
    rotations: int = 0


@dataclass
class Pod:
    namespace: str
    name: str
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    containers: dict[str, Container] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    deleted: bool = False

    @property
    def folder_name(self) -> str:
        return f"{self.namespace}_{self.name}_{self.uid}"

    def metadata(self) -> dict[str, Any]:
        """The pod as the kubelet's /pods lists it (metadata only, which is all the agent reads)."""
        return {"metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid,
                             "labels": self.labels, "annotations": self.annotations},
                "spec": {"containers": [{"name": c} for c in self.containers]}}


class PodTree:
    """The pods of a node and their logs under `root` (the node's /var/log/pods); thread-safe per call."""

    def __init__(self, root: Path, fmt: str = "cri", keep: int = 5) -> None:
        self.root = root
        self.format = fmt  # "cri" or "docker"
        self.keep = keep  # files per container the kubelet keeps: the live one and keep - 1 rotated
        self.pods: list[Pod] = []
        self._lock = threading.Lock()
        self._stamp = 0  # rotation names: one per second in real life, counted up here
        root.mkdir(parents=True, exist_ok=True)

    def add_pod(self, namespace: str, name: str, containers: tuple[str, ...] = ("app",),
                labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> Pod:
        pod = Pod(namespace, name, labels=dict(labels or {}), annotations=dict(annotations or {}))
        for c in containers:
            pod.containers[c] = Container(c)
            self.log_path(pod, c).parent.mkdir(parents=True, exist_ok=True)
            self.log_path(pod, c).touch()
        with self._lock:
            self.pods.append(pod)
        return pod

    def log_path(self, pod: Pod, container: str, restart: int | None = None) -> Path:
        c = pod.containers[container]
        return self.root / pod.folder_name / container / f"{c.restart if restart is None else restart}.log"

    def records(self, stream: str, text: str, chunk: int = CHUNK) -> list[str]:
        return (cri_records if self.format == "cri" else docker_records)(stream, text, chunk)

    def write(self, pod: Pod, container: str, lines: list[tuple[str, str]], chunk: int = CHUNK,
              interleave: bool = True) -> None:
        """Append lines (stream, text): each as its records; with `interleave`, the records of the
        two streams alternate (a stdout line's P records with a stderr line's between them)."""
        queues: dict[str, list[str]] = {"stdout": [], "stderr": []}
        for stream, text in lines:
            queues[stream].extend(self.records(stream, text, chunk))
        out: list[str] = []
        if interleave:
            while queues["stdout"] or queues["stderr"]:
                for stream in ("stdout", "stderr"):
                    if queues[stream]:
                        out.append(queues[stream].pop(0))
        else:
            out = [r for stream, text in lines for r in self.records(stream, text, chunk)]
        c = pod.containers[container]
        with open(self.log_path(pod, container), "a") as f:
            f.write("".join(out))
        c.written.extend((c.restart, stream, text) for stream, text in lines)

    def write_partial(self, pod: Pod, container: str, stream: str, text: str, chunk: int = CHUNK) -> str:
        """Write only the P records of a line (its end comes with finish_partial, perhaps after a
        rotation); returns what is left to write."""
        records = self.records(stream, text, chunk)
        head = records[:-1]
        with open(self.log_path(pod, container), "a") as f:
            f.write("".join(head))
        return records[-1]

    def finish_partial(self, pod: Pod, container: str, stream: str, text: str, last: str) -> None:
        c = pod.containers[container]
        with open(self.log_path(pod, container), "a") as f:
            f.write(last)
        c.written.append((c.restart, stream, text))

    def rotate(self, pod: Pod, container: str) -> Path:
        """The kubelet's rotation: the live file renamed to <n>.log.<timestamp> (the runtime reopens
        a new one), every older rotated file gzipped (through .gz.tmp, the plain one then deleted),
        and the oldest beyond `keep` files deleted. Returns the renamed file."""
        live = self.log_path(pod, container)
        with self._lock:
            self._stamp += 1
            stamp = self._stamp
        name = time.strftime("%Y%m%d-%H%M%S", time.gmtime(1_780_000_000 + stamp))
        rotated = live.with_name(f"{live.name}.{name}")
        older = sorted(p for p in live.parent.iterdir() if p.name.startswith(live.name + ".")
                       and not p.name.endswith((".gz", ".tmp")))
        os.rename(live, rotated)
        live.touch()
        for plain in older:
            tmp = plain.with_name(plain.name + ".gz.tmp")
            with open(plain, "rb") as src, gzip.open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.rename(tmp, plain.with_name(plain.name + ".gz"))
            plain.unlink()
        rotated_all = sorted(p for p in live.parent.iterdir() if p.name.startswith(live.name + "."))
        for extra in rotated_all[: max(0, len(rotated_all) - (self.keep - 1))]:
            extra.unlink()
        pod.containers[container].rotations += 1
        return rotated

    def restart(self, pod: Pod, container: str) -> Path:
        """The container restarted: the runtime writes <restart + 1>.log beside the old one."""
        c = pod.containers[container]
        c.restart += 1
        path = self.log_path(pod, container)
        path.touch()
        return path

    def delete(self, pod: Pod) -> None:
        """The pod is gone: the kubelet removes its log folder."""
        shutil.rmtree(self.root / pod.folder_name)
        pod.deleted = True

    def expected(self) -> dict[tuple[str, str, int, str], list[str]]:
        """{(pod uid, container, restart, stream): the lines written, in order}."""
        out: dict[tuple[str, str, int, str], list[str]] = {}
        for pod in list(self.pods):
            for c in pod.containers.values():
                for restart, stream, text in c.written:
                    out.setdefault((pod.uid, c.name, restart, stream), []).append(text)
        return out

    def count(self) -> int:
        return sum(len(c.written) for pod in self.pods for c in pod.containers.values())


@dataclass
class PodTally:
    """What the pods wrote against what Kafka holds, per container, restart and stream."""

    written: int
    delivered: int
    missing: int = 0
    duplicated: int = 0
    out_of_order: int = 0  # (container, restart, stream)s whose lines arrived in another order
    unexpected: list[str] = field(default_factory=list)  # messages that are no line written (a fragment ...)
    no_identity: int = 0  # messages without their pod's identity (or with another pod's)
    order: list[str] = field(default_factory=list)  # where each out-of-order sequence first differs
    lost: list[str] = field(default_factory=list)  # per sequence with lines missing: how many, the first

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.out_of_order or self.unexpected or self.no_identity)

    def describe(self) -> str:
        out = (f"written {self.written}, delivered {self.delivered}, missing {self.missing}, duplicated "
               f"{self.duplicated}, out of order {self.out_of_order}, without identity {self.no_identity}")
        if self.unexpected:
            out += f", {len(self.unexpected)} unexpected e.g. {self.unexpected[:3]}"
        if self.order:
            out += f"; order: {self.order[:3]}"
        if self.lost:
            out += f"; missing: {self.lost[:6]}"
        return out


def tally_pods(tree: PodTree, messages: list[dict[str, Any]]) -> PodTally:
    """Line by line: every line once, whole, in order per (container, restart, stream), with its pod's
    identity (namespace, pod, uid, container and restart count matching the file's path)."""
    expected = tree.expected()
    got: dict[tuple[str, str, int, str], list[str]] = {}
    t = PodTally(written=sum(len(v) for v in expected.values()), delivered=len(messages))
    by_uid = {p.uid: p for p in tree.pods}
    for m in messages:
        k8s = m.get("kubernetes")
        if not isinstance(k8s, dict) or k8s.get("pod_uid") not in by_uid:
            t.no_identity += 1
            t.unexpected.append(str(m.get("data"))[:80])
            continue
        pod = by_uid[k8s["pod_uid"]]
        if (k8s.get("namespace"), k8s.get("pod")) != (pod.namespace, pod.name) or \
                f"/{pod.folder_name}/{k8s.get('container')}/{k8s.get('restart_count')}.log" not in str(m.get("path")):
            t.no_identity += 1
        got.setdefault((pod.uid, str(k8s.get("container")), int(k8s.get("restart_count", -1)),
                        str(m.get("stream"))), []).append(str(m.get("data")))
    for key in set(expected) | set(got):
        want, have = expected.get(key, []), got.get(key, [])
        counts = Counter(have)
        wanted = set(want)
        gone = [line for line in want if counts[line] == 0]
        t.missing += len(gone)
        if gone:
            t.lost.append(f"{key[1:]}: {len(gone)} of {len(want)} from {gone[0][:60]!r} to {gone[-1][:60]!r}")
        t.duplicated += sum(n - 1 for line, n in counts.items() if n > 1 and line in wanted)
        t.unexpected += [line[:80] for line in have if line not in wanted]
        arrived, sent = [line for line in dict.fromkeys(have) if line in wanted], [x for x in want if counts[x]]
        if arrived != sent:
            t.out_of_order += 1
            i = next(i for i, (a, b) in enumerate(zip(arrived, sent, strict=False)) if a != b)
            t.order.append(f"{key[1:]} at {i} of {len(sent)}: got {arrived[i][:60]!r}, then "
                           f"{[x[:60] for x in arrived[i + 1:i + 3]]}, wrote {sent[i][:60]!r}")
    return t


class KubeletServer:
    """GET /pods on 127.0.0.1: the PodList of `pods` (a list, changed in place by the test)."""

    def __init__(self, pods: list[Pod], token: str = "") -> None:
        self.pods = pods
        self.token = token
        self.requests = 0
        self.refused = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                if server.token and self.headers.get("Authorization") != f"Bearer {server.token}":
                    server.refused += 1
                    self._send(401, b'{"kind":"Status","code":401,"message":"Unauthorized"}')
                    return
                if self.path != "/pods":
                    self._send(404, b"404 page not found")
                    return
                items = [p.metadata() for p in list(server.pods) if not p.deleted]
                self._send(200, json.dumps({"kind": "PodList", "apiVersion": "v1", "items": items}).encode())

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-kubelet", daemon=True)

    def __enter__(self) -> KubeletServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
