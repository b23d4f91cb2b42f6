"""What `logagent check` verifies besides config.ini itself: Kafka, etcd, the collect entries.

Each check returns ``(ok, one-line detail)`` and never raises for a bad value or an
unreachable server: `check` prints one line per part and exits 1 when one is not ok.
The entries are judged as the agent would judge them at run time, including where
their folders really lead (the agent decides allowed_paths on the opened file, so an
entry whose folder is a symlink to elsewhere collects nothing though its name is allowed).
"""

from __future__ import annotations

import logging
import os

from logagent.config.settings import KafkaSettings, Settings
from logagent.config.sysinfo import parse_sysinfo_value
from logagent.config.values import has_glob, show
from logagent.control.etcd_client import connect
from logagent.errors import CollectConfigError, ConfigError, EtcdError
from logagent.sources.files.entry import CollectEntry, parse_collect_value, path_allowed


def check_kafka(settings: KafkaSettings, timeout: float = 5.0) -> tuple[bool, str]:
    """One metadata request to the brokers: (ok, one-line description)."""
    from confluent_kafka import KafkaException, Producer

    from logagent.sinks.kafka.config import producer_config

    conf = producer_config(settings)
    conf.pop("error_cb", None)
    conf["logger"] = logging.getLogger("logagent.check.kafka")
    try:
        producer = Producer(conf)
    except KafkaException as exc:
        return False, f"invalid [kafka.producer] configuration: {exc.args[0].str()}"
    try:
        md = producer.list_topics(timeout=timeout)
        brokers = ", ".join(f"{b.host}:{b.port}" for b in md.brokers.values())
        return True, f"{len(md.brokers)} broker(s): {brokers}"
    except KafkaException as exc:
        return False, f"no answer from {settings.address} within {timeout:.0f}s: {exc.args[0].str()}"


def _fixed_prefix(path: str) -> tuple[str, str]:
    """(the leading folders without glob characters, the rest): `/a/b/*.log` is (`/a/b`, `*.log`)."""
    parts = path.split("/")[1:]
    for index, part in enumerate(parts):
        if has_glob(part):
            return "/" + "/".join(parts[:index]), "/".join(parts[index:])
    return path, ""


def resolution_problem(entry: CollectEntry, allowed: tuple[str, ...]) -> str | None:
    """Why files of this (valid) entry would be refused when opened, or None.

    Its name is inside allowed_paths (parse_entry checked), but a symlink on the way (the
    file itself, or a folder before the first glob character) can lead outside: the agent
    then refuses every file there. The target is not named: check output gets pasted.
    """
    fixed, rest = _fixed_prefix(entry.path)
    real = os.path.realpath(fixed)  # non-strict: a missing tail stays as written
    if real == fixed:
        return None
    resolved = real + ("/" + rest if rest else "") if real != "/" else "/" + rest
    if path_allowed(resolved, allowed):
        return None
    what = "folder" if rest else "path"
    return (f"{show(entry.path)}: {what} {show(fixed)} resolves through a symlink to a place outside "
            "[agent] allowed_paths; its files would be refused when opened")


def judge_collect(value: bytes | str | None, key: str, allowed: tuple[str, ...],
                  unset: str) -> tuple[bool, list[str]]:
    """(ok, parts) for a collect value as the agent would take it; `unset` describes a missing key."""
    try:
        entries, errors = parse_collect_value(value, key, allowed)
    except CollectConfigError as exc:
        return False, [str(exc)]
    if value is None:
        parts = [f"{key} {unset}"]
    elif not entries and not errors:
        parts = [f"{key} is [] (nothing collected)"]
    else:
        parts = [f"{key} has {len(entries)} good entr{'y' if len(entries) == 1 else 'ies'}"]
    problems = errors + [f"{key}: {p}" for e in entries if (p := resolution_problem(e, allowed))]
    return not problems, parts + problems


def check_collect_files(settings: Settings) -> tuple[bool, str]:
    """`[collect] files` (used when [etcd] address is empty), judged like an etcd value."""
    ok, parts = judge_collect(settings.collect_files, f"{settings.source}: [collect] files",
                              settings.agent.allowed_paths, "not set")
    return ok, "; ".join(parts)


def check_etcd(settings: Settings, timeout: float = 5.0) -> tuple[bool, str]:
    """Reach etcd, read this host's keys, validate their values and their entries' paths."""
    collect_key, sysinfo_key = settings.etcd.keys_for(settings.id)
    try:
        with connect(settings.etcd, timeout) as client:
            snap = client.read([collect_key, sysinfo_key])
    except (EtcdError, ConfigError) as exc:
        return False, str(exc)
    ok, parts = judge_collect(snap.values[collect_key], collect_key, settings.agent.allowed_paths,
                              "not set (nothing collected)")
    parts.insert(0, f"reachable at revision {snap.revision}")
    try:
        parse_sysinfo_value(snap.values[sysinfo_key], sysinfo_key, settings.sysinfo)
        parts.append(f"{sysinfo_key} " + ("not set ([sysinfo] defaults)" if snap.values[sysinfo_key] is None
                                          else "is valid"))
    except ConfigError as exc:
        ok = False
        parts.append(str(exc))
    return ok, "; ".join(parts)
