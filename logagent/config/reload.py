"""What a SIGHUP may change: a diff of two Settings over every field, each live or restart-only.

The fields are walked generically (``dataclasses.fields``, into every nested settings dataclass),
so a field added to Settings or to one of its sections is seen by the diff without touching this
file. Each leaf must be listed in exactly one of LIVE, RESTART_ONLY or NOT_SETTINGS;
tests/unit/config/test_reload.py fails for a leaf in none, so a new key cannot be forgotten. At run time
an unlisted leaf that changed is reported as restart-only: never dropped without a word.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from logagent.config.settings import Settings

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# Applied by Agent.reload without a restart, each because it is read where it is used, not
# copied into running parts at start:
LIVE = frozenset({
    "agent.log_level",        # the root logger's level
    "agent.log_format",       # the root handler's formatter (cheap, no handler reopened)
    "agent.allowed_paths",    # entries are judged again, tailers outside stop
    "agent.groups",           # the effective configuration is merged again from the new groups' keys
    "agent.shutdown_timeout",  # read when the stop begins
    "agent.registry_max_entries",  # Registry.set_max_entries (trims at once if over the new cap)
    "collect_files",          # the manager diffs the entries (running files keep their place)
    "sysinfo.enabled", "sysinfo.topic", "sysinfo.interval", "sysinfo.format",  # the reporter's update()
})

# Need a restart: the producer and the etcd client are built once with them; identity and
# data_dir name the etcd keys and the registry; the tailers, the descriptor budget, the spool, the
# registry flush and the scan loop copy their numbers when they start (changing them under running
# tailers would apply them to some files and not others).
RESTART_ONLY = frozenset({
    "kafka.address", "kafka.chan_size", "kafka.producer", "kafka.delivery", "kafka.transactional_id",
    "kafka.transaction_interval", "kafka.transaction_max_messages", "kafka.offsets_topic",
    "kafka.batch_producer",
    "etcd.address", "etcd.timeout", "etcd.collect_log_key", "etcd.collect_sysinfo_key",
    "etcd.username", "etcd.password", "etcd.ca_cert", "etcd.cert_cert", "etcd.cert_key",
    "agent.id", "agent.ip", "agent.hostname", "agent.data_dir", "agent.http_listen",
    "fleet.prefix", "fleet.status", "fleet.status_ttl", "fleet.status_interval",
    "agent.max_line_bytes", "agent.read_buffer_bytes", "agent.max_open_files", "agent.close_inactive",
    "agent.stat_interval", "agent.scan_interval", "agent.rotate_wait", "agent.registry_flush_interval",
    "agent.spool_max_bytes", "agent.max_files_per_glob",
    # The kubelet client is built once (and running tailers' messages carry what it gave them).
    "kubernetes.kubelet_url", "kubernetes.token_file", "kubernetes.ca_file", "kubernetes.tls_verify",
    "kubernetes.metadata_interval", "kubernetes.annotations",
})

# Describe the file rather than configure the agent: taken over from the new load as they are.
NOT_SETTINGS = frozenset({"source", "warnings"})


def leaves(obj: DataclassInstance, prefix: str = "") -> dict[str, Any]:
    """{dotted field name: value} of every non-dataclass field, nested settings walked into."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(leaves(value, name + "."))
        else:
            out[name] = value
    return out


def ini_name(leaf: str, old: Any = None, new: Any = None) -> str:
    """How config.ini spells a leaf: '[agent] max_open_files', '[collect] files'. For the
    librdkafka pass-through, the keys that differ ('[kafka.producer] linger.ms'): names only,
    a value may be a secret."""
    if leaf == "collect_files":
        return "[collect] files"
    if leaf == "kafka.producer" and isinstance(old, Mapping) and isinstance(new, Mapping):
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return "[kafka.producer] " + ", ".join(keys)
    section, _, key = leaf.rpartition(".")
    return f"[{section}] {key}" if section else leaf


@dataclass(frozen=True)
class Diff:
    """The leaves that differ between two Settings, split by what a reload can do with them."""

    live: tuple[str, ...]
    restart_only: tuple[str, ...]
    restart_names: tuple[str, ...]  # restart_only as config.ini names them, for the warning


def diff(old: Settings, new: Settings) -> Diff:
    before, after = leaves(old), leaves(new)
    live: list[str] = []
    restart: list[str] = []
    names: list[str] = []
    for leaf in sorted(set(before) | set(after)):
        a, b = before.get(leaf), after.get(leaf)
        if leaf in NOT_SETTINGS or a == b:
            continue
        if leaf in LIVE:
            live.append(leaf)
        else:  # RESTART_ONLY, or a field nobody classified yet: say so rather than drop it
            restart.append(leaf)
            names.append(ini_name(leaf, a, b))
    return Diff(tuple(live), tuple(restart), tuple(names))


def _replace_leaf(obj: Any, path: list[str], value: Any) -> Any:
    head, rest = path[0], path[1:]
    if not rest:
        return dataclasses.replace(obj, **{head: value})
    return dataclasses.replace(obj, **{head: _replace_leaf(getattr(obj, head), rest, value)})


def merge(old: Settings, new: Settings) -> Settings:
    """The settings in force after a reload: `new` for every LIVE leaf and NOT_SETTINGS field,
    `old` for everything else (restart-only values keep what runs, so the next diff still
    names them)."""
    after = leaves(new)
    merged = old
    for leaf in sorted(LIVE | NOT_SETTINGS):
        if leaf in after:
            merged = _replace_leaf(merged, leaf.split("."), after[leaf])
    return merged
