"""Pods' labels and annotations from the node's own kubelet: one list request per interval.

Metadata lookups against the API server, one per pod or per file, have taken down clusters of
a thousand nodes. Here each agent asks only its node's kubelet (`GET <kubelet_url>/pods`: the
pods of this node), once per `metadata_interval`, whatever the number of files, and never more
often. A file of a pod the last list did not have waits for the next list (at most an interval)
before its first line goes out, so its messages carry the labels from the first; a pod that list
does not have either is remembered as unknown and its files wait no more.

What a list gave is kept in `<data_dir>/kubernetes-pods.json` (written atomically when it
changes) for RETAIN seconds after the pod was last listed: a pod deleted before its files are
read (a Job that ended while the agent restarted, a file read from the spool) keeps its labels.

A kubelet that cannot be reached or answers badly is said once per distinct problem (WARNING) and
counted in `logagent_kubelet_requests_total{outcome="error"}`; the files go on with what is cached.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from logagent.config.settings import KubernetesSettings
from logagent.errors import SourceError
from logagent.runtime import metrics
from logagent.runtime.atomic import write_atomic

log = logging.getLogger("logagent.kubelet")

RETAIN = 24 * 3600.0  # seconds a pod's metadata is kept after the last list that had it
MAX_BODY = 64 * 1024 * 1024  # a /pods answer larger than this is refused (110 pods are ~1-2 MB)
TIMEOUT = 10.0
CACHE = "kubernetes-pods.json"


@dataclass(frozen=True)
class PodMeta:
    namespace: str
    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    seen: float = 0.0  # wall time of the last list that had it


def _strings(value: Any) -> dict[str, str]:
    """A labels or annotations map, its string values only."""
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def parse_pod_list(body: bytes, annotations: bool, now: float) -> dict[str, PodMeta]:
    """{pod uid: its metadata} from a kubelet's /pods answer (a PodList); SourceError when it is not one."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise SourceError(f"the kubelet's /pods answer is not JSON ({exc})") from None
    items = doc.get("items") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise SourceError("the kubelet's /pods answer is not a pod list (no items)")
    out: dict[str, PodMeta] = {}
    for item in items:
        meta = item.get("metadata") if isinstance(item, dict) else None
        if not isinstance(meta, dict):
            continue
        uid, namespace, name = meta.get("uid"), meta.get("namespace"), meta.get("name")
        if isinstance(uid, str) and isinstance(namespace, str) and isinstance(name, str):
            out[uid] = PodMeta(namespace, name, _strings(meta.get("labels")),
                               _strings(meta.get("annotations")) if annotations else {}, now)
    return out


class KubeletClient:
    """GET <kubelet_url>/pods, blocking (run in a thread): never through a proxy."""

    def __init__(self, settings: KubernetesSettings) -> None:
        self.settings = settings
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
        if settings.kubelet_url.startswith("https:"):
            context = ssl.create_default_context(cafile=settings.ca_file or None)
            if not settings.tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)

    def list_pods(self) -> bytes:
        """The body of /pods; SourceError with the reason when it cannot be had."""
        headers = {"Accept": "application/json"}
        if self.settings.token_file:
            try:
                token = Path(self.settings.token_file).read_text().strip()
            except OSError as exc:
                raise SourceError(f"cannot read [kubernetes] token_file {self.settings.token_file}: "
                                  f"{exc.strerror or exc}") from None
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.settings.kubelet_url + "/pods", headers=headers)
        try:
            with self._opener.open(request, timeout=TIMEOUT) as resp:
                body: bytes = resp.read(MAX_BODY + 1)
        except urllib.error.HTTPError as exc:
            raise SourceError(f"the kubelet answered {exc.code} {exc.reason} to GET /pods"
                              + (" (is token_file's service account allowed nodes/pods?)"
                                 if exc.code in (401, 403) else "")) from None
        except (OSError, ValueError) as exc:  # URLError, timeouts, TLS failures are OSErrors
            reason = getattr(exc, "reason", exc)
            raise SourceError(f"cannot reach the kubelet at {self.settings.kubelet_url}: {reason}") from None
        if len(body) > MAX_BODY:
            raise SourceError(f"the kubelet's /pods answer is larger than {MAX_BODY} bytes; refused")
        return body


Listener = Callable[[set[str]], None]  # called with the uids whose metadata changed


class PodMetadata:
    """The node's pods' metadata by uid, listed from the kubelet every interval; see the module docstring."""

    def __init__(self, settings: KubernetesSettings, data_dir: Path,
                 fetch: Callable[[], bytes] | None = None) -> None:
        self.settings = settings
        self.path = Path(data_dir) / CACHE
        self._fetch = fetch or KubeletClient(settings).list_pods
        self._pods: dict[str, PodMeta] = {}
        self._unknown: set[str] = set()  # asked for, and not in the last list
        self._wanted: set[str] = set()  # asked for since the last list began
        self._listed = asyncio.Event()  # set when a list ends; a new one for each
        self._begun = 0  # lists begun so far
        self._ended = 0  # the number of the last list that ended (they run one at a time)
        self._failing = False  # the last list failed
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._last_error = ""

    # ---- what the file source asks

    def get(self, uid: str) -> PodMeta | None:
        return self._pods.get(uid)

    def known(self, uid: str) -> bool:
        """Listed once, or asked for and not in the list after that: nothing to wait for."""
        return uid in self._pods or uid in self._unknown

    async def wait_for(self, uid: str) -> PodMeta | None:
        """The pod's metadata, waiting for the next list when it is not known yet (at most an
        interval; not while the kubelet cannot be reached: the file goes on without)."""
        if self.known(uid) or self._failing or self._task is None or self._task.done():
            return self._pods.get(uid)
        self._wanted.add(uid)
        # The list under way, if it has the pod; else one begun from now on: the one under way may have
        # been answered before the pod was made (its first line went out without its labels). The
        # next begins at most an interval after that one did.
        after = self._begun
        while self._task is not None and not self._task.done():
            await self._listed.wait()  # each list ends with a new event
            if uid in self._pods or self._ended > after or self._failing:
                break
        return self._pods.get(uid)

    def subscribe(self, listener: Listener) -> None:
        if listener not in self._listeners:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # ---- the cache file

    def load(self) -> None:
        """What earlier lists gave (pods listed within RETAIN); a cache that cannot be read is ignored."""
        try:
            doc = orjson.loads(self.path.read_bytes())
            now = time.time()
            for uid, item in doc.get("pods", {}).items():
                meta = PodMeta(str(item["namespace"]), str(item["name"]), _strings(item.get("labels")),
                               _strings(item.get("annotations")), float(item.get("seen", 0)))
                if now - meta.seen < RETAIN:
                    self._pods[uid] = meta
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("%s cannot be read (%s); pods' labels come from the next list", self.path, exc)
        metrics.KUBELET_PODS.set(len(self._pods))

    def _payload(self) -> bytes:
        return orjson.dumps({"pods": {uid: {"namespace": m.namespace, "name": m.name, "labels": m.labels,
                                            "annotations": m.annotations, "seen": m.seen}
                                      for uid, m in self._pods.items()}})

    # ---- the list loop

    async def start(self) -> None:
        if self._task is None:
            self.load()
            self._task = asyncio.create_task(self._run(), name="kubelet-pods")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._listed.set()  # no waiter stays behind a list that will not come

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            await self.refresh()
            await asyncio.sleep(max(0.0, started + self.settings.metadata_interval - time.monotonic()))

    async def refresh(self) -> None:
        """One list request; the cache updated, the listeners told what changed, the waiters woken."""
        wanted, self._wanted = self._wanted, set()
        self._begun += 1
        number = self._begun
        try:
            body = await asyncio.to_thread(self._fetch)
            listed = await asyncio.to_thread(parse_pod_list, body, self.settings.annotations, time.time())
        except SourceError as exc:
            self._failing = True
            metrics.KUBELET_REQUESTS.labels("error").inc()
            if str(exc) != self._last_error:
                self._last_error = str(exc)
                log.warning("%s; pods' labels stay as last listed (%d pods cached)", exc, len(self._pods))
            self._wanted |= wanted
        else:
            self._failing = False
            metrics.KUBELET_REQUESTS.labels("ok").inc()
            if self._last_error:
                log.info("the kubelet at %s answers again", self.settings.kubelet_url)
                self._last_error = ""
            await self._update(listed, wanted)
        finally:
            self._ended = number
            done, self._listed = self._listed, asyncio.Event()
            done.set()

    async def _update(self, listed: dict[str, PodMeta], wanted: set[str]) -> None:
        now = time.time()
        changed = {uid for uid, meta in listed.items()
                   if (old := self._pods.get(uid)) is None or (old.labels, old.annotations, old.namespace, old.name)
                   != (meta.labels, meta.annotations, meta.namespace, meta.name)}
        expired = [uid for uid, meta in self._pods.items() if uid not in listed and now - meta.seen >= RETAIN]
        self._pods.update(listed)
        for uid in expired:
            del self._pods[uid]
        self._unknown = {uid for uid in self._unknown | wanted if uid not in self._pods}
        metrics.KUBELET_PODS.set(len(self._pods))
        if changed:  # in the same step as the cache: no line is read between them with the old labels
            for listener in list(self._listeners):
                listener(changed)
        if changed or expired or listed:
            try:
                await asyncio.to_thread(write_atomic, self.path, self._payload())
            except OSError as exc:
                log.warning("cannot write %s (%s); pods' labels are kept in memory", self.path, exc.strerror or exc)
