"""The agent: wires sources, the bounded queue, the Kafka sink and the control plane.

The parts live in their own modules: the descriptor budget in sources/files/budget.py, the
control plane in control/etcd.py (EtcdControl) or control/static.py ([collect] files), the
Kafka probe behind /readyz in sinks/kafka/probe.py, sd_notify in runtime/systemd.py. What
stays here is the wiring, the start and stop order, and SIGHUP (re-read config.ini, hand it
to each part).

Start order: HTTP (first: a taken port stops us before anything is touched), registry,
sink, watcher, tailers (from etcd or [collect] files), sysinfo reporter. Stop order, as
Vector does it: sources first, then the queue drains and the producer flushes under a
deadline, then the registry is written a last time.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from logagent.config.reload import diff as settings_diff
from logagent.config.reload import ini_name, merge
from logagent.config.settings import Settings, describe, load
from logagent.config.sysinfo import SysinfoSettings
from logagent.config.values import split_host_port
from logagent.control.base import Control, EntryHealth, Health
from logagent.control.etcd import EtcdControl
from logagent.control.static import StaticControl
from logagent.errors import ConfigError, LogagentError
from logagent.pipeline.batch import Batch
from logagent.pipeline.buffer import BatchQueue
from logagent.runtime import metrics
from logagent.runtime.logs import setup_logging
from logagent.runtime.signals import SignalRelay
from logagent.runtime.status import StatusServer
from logagent.runtime.supervise import cancel_and_wait, spawn
from logagent.runtime.systemd import sd_notify
from logagent.sinks.kafka.probe import KafkaProbe
from logagent.sinks.kafka.sink import KafkaSink
from logagent.sinks.kafka.transactional import TransactionalSink
from logagent.sources.files.budget import FdBudget, descriptor_budget
from logagent.sources.files.entry import CollectEntry
from logagent.sources.files.kubelet import PodMetadata
from logagent.sources.files.manager import ManagerContext, TailerManager
from logagent.sources.files.prune import sweep_forever
from logagent.sources.files.registry import Registry
from logagent.sources.files.shipper import TailOptions
from logagent.sources.files.spool import Spool
from logagent.sources.files.watcher import new_watcher
from logagent.sources.host.reporter import SysinfoReporter

log = logging.getLogger("logagent.agent")


def make_sink(settings: Settings, queue: BatchQueue, on_fatal: Callable[[BaseException], None]) -> KafkaSink:
    """The sink of `[kafka] delivery`: a plain idempotent producer, or transactions."""
    if settings.kafka.delivery == "exactly_once":
        return TransactionalSink(settings.kafka, queue, settings.id, settings.transactional_id, on_fatal=on_fatal)
    return KafkaSink(settings.kafka, queue, on_fatal=on_fatal)


class Agent:
    """One running agent; `run()` returns the process exit status."""

    def __init__(self, settings: Settings, config_path: str | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        a = settings.agent
        self.queue = BatchQueue(settings.kafka.chan_size)
        self.registry = Registry(a.data_dir, a.registry_flush_interval, a.registry_max_entries)
        self._prune_task: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None
        self._stop = asyncio.Event()
        self.sink = make_sink(settings, self.queue, self._on_fatal)
        self.watcher = new_watcher()
        k8s = settings.kubernetes
        self.pods = PodMetadata(k8s, a.data_dir) if k8s.kubelet_url else None
        opts = TailOptions(ip=settings.ip, host=settings.hostname, host_id=settings.id, max_line_bytes=a.max_line_bytes,
                           read_buffer_bytes=a.read_buffer_bytes, stat_interval=a.stat_interval,
                           rotate_wait=a.rotate_wait, close_inactive=a.close_inactive)
        self.manager = TailerManager(ManagerContext(
            opts=opts, queue=self.queue, registry=self.registry,
            budget=FdBudget(descriptor_budget(a.max_open_files)), spool=Spool(a.data_dir, a.spool_max_bytes),
            watcher=self.watcher, allowed_paths=a.allowed_paths, scan_interval=a.scan_interval, pods=self.pods,
            max_files_per_entry=a.max_files_per_glob))
        self.sysinfo = SysinfoReporter(settings.sysinfo, self._emit_metric, settings.ip, settings.hostname)
        self.http = StatusServer(*split_host_port(a.http_listen), self.readiness, self.manager.status) \
            if a.http_listen else None
        self.kafka_probe = KafkaProbe(self.sink)
        self.control: Control
        if settings.etcd.address:
            self.control = EtcdControl(settings, self, observer=self)
        else:
            self.control = StaticControl(settings, self)
        self.config_loaded = False
        self._reload_task: asyncio.Task[None] | None = None
        self._reload_again = False

    # ---- sources' entry points

    def _emit_metric(self, topic: str, key: bytes, value: bytes) -> bool:
        """The sysinfo reporter's put: never waits; False (dropped) when the queue is full."""
        return self.queue.offer(Batch(topic, key, [value]))

    async def apply_collect(self, entries: list[CollectEntry]) -> None:
        await self.manager.apply(entries)
        self.config_loaded = True

    def apply_sysinfo(self, settings: SysinfoSettings) -> None:
        self.sysinfo.update(settings)

    # ---- what the fleet status reports (control/base.py's Observed)

    def entry_health(self, behind: bool = False) -> dict[str, EntryHealth]:
        out: dict[str, EntryHealth] = {}
        for path, runner in self.manager.runners.items():
            problems = runner.problems
            out[path] = EntryHealth(files=len(runner.tailers), errors=len(problems),
                                    error=problems[0] if problems else "", behind=runner.behind() if behind else 0)
        return out

    def health(self) -> Health:
        return Health(kafka_reachable=self.sink.connected, spool_bytes=int(metrics.total(metrics.SPOOL_BYTES)),
                      delivered=int(metrics.total(metrics.DELIVERED)),
                      task_crashes=int(metrics.total(metrics.TASK_CRASHES)))

    async def topic_problem(self, topic: str) -> str | None:
        return await asyncio.to_thread(self.sink.topic_problem, topic, 5.0)

    # ---- health

    def readiness(self) -> tuple[bool, str]:
        problems = []
        if not self.sink.connected:
            problems.append("kafka not reachable")
        if not self.config_loaded:
            problems.append("collect configuration not loaded")
        if problems:
            return False, "not ready: " + ", ".join(problems)
        return True, "ready"

    def _on_fatal(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
            status = getattr(exc, "exit_status", 1)
            log.critical("fatal: %s; stopping with exit status %d%s", exc, status,
                         " so the service manager restarts us" if status == 1 else "")
        self._stop.set()

    def request_stop(self, sig: signal.Signals | None = None) -> None:
        if sig is not None and not self._stop.is_set():
            log.info("%s: stopping", sig.name)
        self._stop.set()

    # ---- lifecycle

    async def reload(self) -> None:
        """SIGHUP: re-read config.ini; apply every changed setting that can change live, and name
        in one WARNING each changed one that takes a restart (logagent/config/reload.py sorts them)."""
        if self.config_path is None:
            log.warning("SIGHUP: no config file was given (-c); nothing to reload")
            return
        try:
            new = load(self.config_path)
        except ConfigError as exc:
            metrics.CONFIG_ERRORS.labels("config.ini").inc()
            log.error("SIGHUP: %s; the running configuration stays in force", exc)
            return
        old = self.settings
        change = settings_diff(old, new)
        if change.restart_only:
            log.warning("SIGHUP: %s changed; that takes effect at the next restart",
                        "; ".join(change.restart_names))
        for warning in new.warnings:
            log.warning("%s", warning)
        self.settings = merged = merge(old, new)
        a = merged.agent
        if a.log_format != old.agent.log_format:
            setup_logging(a.log_level, a.log_format)
        logging.getLogger().setLevel(a.log_level)
        self.manager.ctx.allowed_paths = a.allowed_paths
        if a.registry_max_entries != old.agent.registry_max_entries:
            self.registry.set_max_entries(a.registry_max_entries)
        await self.control.reload(merged)
        applied = ", ".join(ini_name(leaf) for leaf in change.live) or "no live setting changed"
        log.info("SIGHUP: configuration reloaded from %s (%s)", self.config_path, applied)
        for line in describe(merged):  # at DEBUG, the whole configuration now in force
            log.debug("config now: %s", line)

    def _on_sighup(self, sig: signal.Signals | None = None) -> None:
        """One reload at a time; SIGHUPs that arrive during one make exactly one more after it,
        so the last file written is always the one applied."""
        if self._reload_task is not None and not self._reload_task.done():
            self._reload_again = True
            return
        self._reload_task = asyncio.create_task(self._reloads(), name="reload")

    async def _reloads(self) -> None:
        while True:
            self._reload_again = False
            try:
                await self.reload()
            except Exception:  # a reload's bug must not end the agent nor the next SIGHUP
                log.exception("SIGHUP: reload failed; the running configuration stays in force")
            if not self._reload_again or self._stop.is_set():
                return

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (exit 0) or a fatal error (exit 1: the producer's, or
        [agent] http_listen that cannot be had, e.g. a second agent on the port)."""
        for line in describe(self.settings):
            log.info("config: %s", line)
        for warning in self.settings.warnings:
            log.warning("%s", warning)
        # Not loop.add_signal_handler: under load it loses signals (logagent/runtime/signals.py).
        relay = SignalRelay({signal.SIGTERM: self.request_stop, signal.SIGINT: self.request_stop,
                             signal.SIGHUP: self._on_sighup})
        relay.install(asyncio.get_running_loop())
        if self.http is not None:
            # First, before Kafka, etcd or the registry are touched: a second agent on this host
            # (the port is taken) stops here with one line and exit 1, having changed nothing.
            try:
                await self.http.start()
            except LogagentError as exc:
                log.critical("%s", exc)
                relay.uninstall()
                return 1
        try:
            await self.start()
            sd_notify("READY=1\nSTATUS=collecting")
            await self._stop.wait()
        except LogagentError as exc:
            log.critical("%s", exc)
            self._fatal = self._fatal or exc
        finally:
            sd_notify("STOPPING=1")
            await self.stop()
            relay.uninstall()
        return 0 if self._fatal is None else getattr(self._fatal, "exit_status", 1)

    async def start(self) -> None:
        self.registry.load()
        await self.sink.start()  # exactly_once: waits for Kafka, reads the committed offsets back
        if isinstance(self.sink, TransactionalSink) and self.sink.committed is not None:
            changed = self.registry.adopt(list(self.sink.committed.checkpoints.values()))
            log.info("exactly_once: %d file offsets taken from the offsets topic over the registry's", changed)
        if self.manager.ctx.spool is not None:
            self.manager.ctx.spool.load()
            self.manager.ctx.spool.keep_only(self.registry.live_uids())
        self.kafka_probe.start()
        await self.watcher.start()
        await self.registry.start()
        self._prune_task = spawn("registry prune", "registry", lambda: sweep_forever(self.registry, self.registry.owns))
        if self.http is not None:
            await self.http.start()  # already listening when run() started it; idempotent
        if self.pods is not None:
            await self.pods.start()  # before the files: a file of a pod not listed yet waits for a list
        await self.control.start()
        await self.sysinfo.start()

    async def stop(self) -> None:
        """Stop in order; safe to call twice."""
        timeout = self.settings.agent.shutdown_timeout
        if self._reload_task is not None:
            await asyncio.gather(self._reload_task, return_exceptions=True)
        await self.control.stop()
        await self.sysinfo.stop()
        await self.manager.stop()
        if self.pods is not None:
            await self.pods.stop()
        if self.manager.ctx.spool is not None:
            await asyncio.to_thread(self.manager.ctx.spool.close)
        clean = await self.sink.stop(timeout)
        await self.kafka_probe.stop()
        if self._prune_task is not None:
            await cancel_and_wait([self._prune_task])
        await self.registry.stop()
        await self.watcher.stop()
        if self.http is not None:
            await self.http.stop()
        log.info("stopped%s", "" if clean else " with unacknowledged messages (re-read at next start)")
