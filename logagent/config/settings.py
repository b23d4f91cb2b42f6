"""config.ini into typed settings.

Every key has a default, so an empty file is valid. The old Go agent's keys
(`[kafka] address, chan_size`, `[etcd] address, timeout, collect_log_key,
collect_sysinfo_key`) keep their meaning. `LOGAGENT_<SECTION>_<KEY>` environment
variables win over the file. A value in quotes (`address = "127.0.0.1:9092"`) is taken
without them, as the Go agent's go-ini did. A bad value raises ConfigError with one line
naming the file, section, key, value and what was expected; a file that is not ini at all
is named with the line number and the kind of problem, never its content. Unknown keys and
sections are returned as warnings that suggest the nearest known name.
"""

from __future__ import annotations

import configparser
import difflib
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logagent.config.sysinfo import SysinfoSettings
from logagent.config.values import (
    decode_json,
    name_problem,
    parse_bool,
    split_host_port,
    topic_problem,
    unique_names,
)
from logagent.errors import ConfigError
from logagent.runtime.names import display_name


@dataclass(frozen=True)
class KafkaSettings:
    address: str = "127.0.0.1:9092"
    chan_size: int = 10000
    producer: Mapping[str, str] = field(default_factory=dict)  # the operator's keys; defaults: sinks/kafka/config.py
    # at_least_once (a plain idempotent producer) or exactly_once (transactions: docs/delivery.md)
    delivery: str = "at_least_once"
    transactional_id: str = ""  # exactly_once: the producers' transactional.id base; empty: logagent-<host id>
    transaction_interval: float = 0.2  # exactly_once: seconds of lines per transaction
    transaction_max_messages: int = 20000  # exactly_once: a transaction ends at this many messages
    offsets_topic: str = "logagent-offsets"  # exactly_once: the compacted topic of committed file offsets
    batch_producer: str = "auto"  # auto: the compiled batch producer where it runs (sinks/kafka/batched.py); off


@dataclass(frozen=True)
class EtcdSettings:
    address: tuple[str, ...] = ("127.0.0.1:2379",)
    timeout: float = 5.0
    collect_log_key: str = "/logagent/%s/collect_log/config"
    collect_sysinfo_key: str = "/logagent/%s/collect_sysinfo/config"
    username: str = ""
    password: str = ""
    ca_cert: str = ""
    cert_cert: str = ""
    cert_key: str = ""

    def keys_for(self, host_id: str) -> tuple[str, str]:
        """The collect_log and collect_sysinfo keys of the host with this id (by default its ip)."""
        return _fill(self.collect_log_key, host_id), _fill(self.collect_sysinfo_key, host_id)


@dataclass(frozen=True)
class AgentSettings:
    id: str = ""  # the host's id in etcd keys and its status; empty: the ip (today's per-IP keys)
    groups: tuple[str, ...] = ()  # fleet groups whose configuration this host takes (docs/fleet.md)
    ip: str = "auto"
    hostname: str = "auto"
    data_dir: Path = Path("/var/lib/logagent")
    allowed_paths: tuple[str, ...] = ("/var/log/**",)
    log_level: str = "INFO"
    log_format: str = "text"
    http_listen: str = "127.0.0.1:9798"
    max_line_bytes: int = 1024 * 1024
    read_buffer_bytes: int = 256 * 1024
    max_open_files: int = 1024
    close_inactive: float = 300.0
    stat_interval: float = 1.0
    scan_interval: float = 2.0
    max_files_per_glob: int = 100_000  # files one glob entry follows; past it, the first in sorted order
    rotate_wait: float = 2.0
    registry_flush_interval: float = 1.0
    registry_max_entries: int = 50_000  # files in the registry; over it, the oldest finished go
    shutdown_timeout: float = 30.0
    spool_max_bytes: int = 1024 * 1024 * 1024  # rotated-away bytes Kafka does not have yet, kept on disk


@dataclass(frozen=True)
class FleetSettings:
    """The fleet keys (docs/etcd-keys-fleet.md): where they live and how the status is written."""

    prefix: str = "/logagent/fleet"
    status: bool = True  # write <prefix>/status/<id> (and <prefix>/seen/<id>) back to etcd
    status_ttl: float = 15.0  # seconds: the status key's lease; a dead host's status is gone after it
    status_interval: float = 10.0  # seconds between two writes when only counters changed


@dataclass(frozen=True)
class KubernetesSettings:
    """Pods' labels and annotations from the node's kubelet (docs/deploy-kubernetes.md); off when
    `kubelet_url` is empty. A pod's identity comes from its log's path and needs none of this."""

    kubelet_url: str = ""  # e.g. https://<node ip>:10250 (authenticated) or http://<node ip>:10255 (read-only port)
    token_file: str = ""  # a bearer token, read again at every request (projected tokens rotate)
    ca_file: str = ""  # the CA of the kubelet's serving certificate; empty: the system's
    tls_verify: bool = True
    metadata_interval: float = 10.0  # seconds between two list requests (/pods), never more often
    annotations: bool = False  # add the pods' annotations to the messages too (labels always)


@dataclass(frozen=True)
class Settings:
    """The whole of config.ini, typed, with `ip`, `hostname` and `id` resolved."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    etcd: EtcdSettings = field(default_factory=EtcdSettings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    fleet: FleetSettings = field(default_factory=FleetSettings)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    collect_files: str = "[]"
    sysinfo: SysinfoSettings = field(default_factory=SysinfoSettings)
    source: str = "<defaults>"
    warnings: tuple[str, ...] = ()

    @property
    def ip(self) -> str:
        return self.agent.ip

    @property
    def id(self) -> str:
        """The host id: `[agent] id`, else the ip."""
        return self.agent.id or self.agent.ip

    @property
    def hostname(self) -> str:
        return self.agent.hostname

    @property
    def transactional_id(self) -> str:
        """exactly_once: the base of the producers' transactional.id (each adds -0, -1): `[kafka]
        transactional_id`, else logagent-<host id>. Stable across restarts, so that a restart
        fences the previous process and aborts what it left open."""
        return self.kafka.transactional_id or f"logagent-{self.id}"


def _fill(template: str, ip: str) -> str:
    return template.replace("%s", ip) if "%s" in template else template


# ---- value parsers: each takes the raw string and returns a value or raises ValueError(expected)

def _int(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"an integer >= {minimum}") from None
        if value < minimum:
            raise ValueError(f"an integer >= {minimum}")
        return value
    return parse


def _seconds(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("a number of seconds > 0") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("a number of seconds > 0")
    return value


def _hostport(raw: str) -> str:
    split_host_port(raw)
    return raw.strip()


def _addresses(allow_empty: bool) -> Callable[[str], tuple[str, ...]]:
    def parse(raw: str) -> tuple[str, ...]:
        parts = tuple(p.strip() for p in raw.split(",") if p.strip())
        if not parts:
            if allow_empty:
                return ()
            raise ValueError("comma-separated host:port addresses")
        for part in parts:
            try:
                _hostport(part)
            except ValueError:
                raise ValueError(f"comma-separated host:port addresses ({part!r} is not)") from None
        return parts
    return parse


def _text(raw: str) -> str:
    return raw.strip()


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        if value.lower() not in {o.lower() for o in options}:
            raise ValueError("one of " + ", ".join(options))
        return value.upper() if options[0].isupper() else value.lower()
    return parse


def _listen(raw: str) -> str:
    value = raw.strip()
    return _hostport(value) if value else ""


def _globs(raw: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in raw.split(",") if p.strip())
    for part in parts:
        if not part.startswith("/"):
            raise ValueError(f"comma-separated absolute path globs ({part!r} is not absolute)")
    return parts


def _ip(raw: str) -> str:
    value = raw.strip()
    if value.lower() == "auto" or not value:
        return "auto"
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("auto or an IP address") from None


def _host_id(raw: str) -> str:
    value = raw.strip()
    if value.lower() in ("", "auto"):
        return ""
    problem = name_problem(value, "host id")
    if problem is not None:
        raise ValueError(f"auto or a host id ({problem})")
    return value


def _transactional_id(raw: str) -> str:
    value = raw.strip()
    if value.lower() in ("", "auto"):
        return ""
    if len(value) > 200 or any(ord(ch) < 33 or ord(ch) == 127 for ch in value):
        raise ValueError("auto or a transactional.id of at most 200 printable characters, no space")
    return value


def _topic(raw: str) -> str:
    value = raw.strip()
    problem = topic_problem(value)
    if problem is not None:
        raise ValueError(f"a Kafka topic name ({problem})")
    return value


def _groups(raw: str) -> tuple[str, ...]:
    try:
        return unique_names((part for part in (p.strip() for p in raw.split(",")) if part), "group")
    except ValueError as exc:
        raise ValueError(f"comma-separated group names ({exc})") from None


def _key_prefix(raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = value.split("/")
    if not value.startswith("/") or len(parts) < 2 or any(p in ("", ".", "..") for p in parts[1:]) \
            or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("an absolute etcd key prefix like /logagent/fleet (no empty, '.' or '..' part, "
                         "no control character)")
    return value


def _flag(raw: str) -> bool:
    flag = parse_bool(raw)
    if flag is None:
        raise ValueError("true or false")
    return flag


def _url(raw: str) -> str:
    """Empty, or an http(s) URL with a host: the kubelet's base URL (no trailing slash)."""
    value = raw.strip().rstrip("/")
    if not value:
        return ""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("empty or an http:// or https:// URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment \
            or any(ord(ch) < 33 or ord(ch) == 127 for ch in value):
        raise ValueError("empty or an http:// or https:// URL with a host, like https://10.0.0.5:10250")
    return value


def _json_text(raw: str) -> str:
    """[collect] files: the same guard as an etcd value (size, strict JSON, nesting), and an array."""
    try:
        data = decode_json(raw)
    except ValueError as exc:
        raise ValueError(f"a JSON array ({exc})") from None
    if not isinstance(data, list):
        got = "null" if data is None else type(data).__name__
        raise ValueError(f"a JSON array of entries (to collect nothing: []), not {got}")
    return raw


# section -> key -> parser (the raw string to the value; the key is the settings attribute's name)
_SCHEMA: dict[str, dict[str, Callable[[str], Any]]] = {
    "kafka": {"address": lambda r: ",".join(_addresses(False)(r)), "chan_size": _int(1),
              "delivery": _choice("at_least_once", "exactly_once"), "transactional_id": _transactional_id,
              "transaction_interval": _seconds, "transaction_max_messages": _int(100), "offsets_topic": _topic,
              "batch_producer": _choice("auto", "off")},
    "etcd": {"address": _addresses(True), "timeout": _seconds, "collect_log_key": _text,
             "collect_sysinfo_key": _text, "username": _text, "password": _text,
             "ca_cert": _text, "cert_cert": _text, "cert_key": _text},
    "agent": {"id": _host_id, "groups": _groups, "ip": _ip, "hostname": _text, "data_dir": lambda r: Path(r.strip()),
              "allowed_paths": _globs, "log_level": _choice("DEBUG", "INFO", "WARNING", "ERROR"),
              "log_format": _choice("text", "json"), "http_listen": _listen,
              "max_line_bytes": _int(64), "read_buffer_bytes": _int(4096), "max_open_files": _int(8),
              "close_inactive": _seconds, "stat_interval": _seconds, "scan_interval": _seconds,
              "max_files_per_glob": _int(1),
              "rotate_wait": _seconds, "registry_flush_interval": _seconds, "registry_max_entries": _int(100),
              "shutdown_timeout": _seconds, "spool_max_bytes": _int(0)},
    "fleet": {"prefix": _key_prefix, "status": _flag, "status_ttl": _seconds, "status_interval": _seconds},
    "kubernetes": {"kubelet_url": _url, "token_file": _text, "ca_file": _text, "tls_verify": _flag,
                   "metadata_interval": _seconds, "annotations": _flag},
    "collect": {"files": _json_text},
    "sysinfo": {"enabled": _text, "topic": _text, "interval": _text, "format": _text},
}
PASSTHROUGH = "kafka.producer"


def env_name(section: str, key: str) -> str:
    """The environment variable that overrides `[section] key`."""
    return "LOGAGENT_" + re.sub(r"[.\-]", "_", f"{section}_{key}").upper()


def unquote(raw: str) -> str:
    """A value without the quotes around it: `"x"`, `'x'`, `` `x` `` and `\"\"\"x\"\"\"` are x.

    The old Go agent's go-ini took quoted values this way, so its config.ini files have them;
    reading them unchanged is the drop-in promise.
    """
    value = raw.strip()
    if len(value) >= 6 and value.startswith('"""') and value.endswith('"""'):
        return value[3:-3]
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'`":
        return value[1:-1]
    return raw


def _parse_error(source: str, exc: configparser.Error) -> ConfigError:
    """A one-line error for a file that is not ini: file:line and the kind of problem.

    configparser's own text quotes the offending lines; for `check -c /etc/shadow` that would
    print a password hash, so the content never goes into the message.
    """
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return ConfigError(f"{source}:{exc.lineno}: not a valid ini file: a line before the first "
                           "[section] header")
    if isinstance(exc, configparser.ParsingError):
        lines = [str(lineno) for lineno, _ in exc.errors[:5]]
        more = f" and {len(exc.errors) - 5} more" if len(exc.errors) > 5 else ""
        return ConfigError(f"{source}:{','.join(lines)}{more}: not a valid ini file: "
                           "line(s) neither 'key = value' nor '[section]'")
    lineno = getattr(exc, "lineno", None)
    where = f"{source}:{lineno}" if lineno else source
    return ConfigError(f"{where}: not a valid ini file ({type(exc).__name__})")


class _CaseSensitiveParser(configparser.ConfigParser):
    """Keys kept as written: librdkafka's keys are case-sensitive (ConfigParser lowercases)."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def _read_file(path: Path | None) -> tuple[configparser.ConfigParser, str]:
    parser = _CaseSensitiveParser(interpolation=None, inline_comment_prefixes=(";", "#"), strict=False)
    if path is None:
        return parser, "<defaults>"
    source = display_name(str(path))  # in every message about the file: one line, whatever its name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: cannot read config file: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc.strerror or exc}") from None
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        raise _parse_error(source, exc) from None
    return parser, source


def _unknown(source: str, section: str, key: str | None) -> str:
    """The warning for an unknown section or key, with the nearest known name when one is close."""
    if key is None:
        names = [*_SCHEMA, PASSTHROUGH]
        match = difflib.get_close_matches(section, names, n=1, cutoff=0.6)
        hint = f", did you mean [{match[0]}]?" if match else ""
        return f"{source}: [{section}]: unknown section, ignored{hint}"
    match = difflib.get_close_matches(key, list(_SCHEMA[section]), n=1, cutoff=0.6)
    hint = f", did you mean {match[0]}?" if match else ""
    return f"{source}: [{section}] {key}: unknown key, ignored{hint}"


def load(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read config.ini (or only defaults when path is None) and the environment."""
    env = os.environ if environ is None else environ
    parser, source = _read_file(Path(path) if path is not None else None)
    warnings: list[str] = []
    values: dict[str, dict[str, Any]] = {s: {} for s in _SCHEMA}

    for section in parser.sections():
        if section == PASSTHROUGH:
            continue
        if section not in _SCHEMA:
            warnings.append(_unknown(source, section, None))
            continue
        for key in parser.options(section):
            if key not in _SCHEMA[section]:
                warnings.append(_unknown(source, section, key))

    def raw_value(section: str, key: str) -> tuple[str, str] | None:
        name = env_name(section, key)
        if name in env:
            return env[name], f"environment {name}"
        if parser.has_section(section) and parser.has_option(section, key):
            return unquote(parser.get(section, key)), f"{source}: [{section}] {key}"
        return None

    for section, keys in _SCHEMA.items():
        for key, parse in keys.items():
            found = raw_value(section, key)
            if found is None:
                continue
            raw, where = found
            try:
                values[section][key] = parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{where} = {raw!r}: expected {exc}") from None

    producer: dict[str, str] = {}
    if parser.has_section(PASSTHROUGH):
        producer.update((k, unquote(v)) for k, v in parser.items(PASSTHROUGH))
    prefix = env_name(PASSTHROUGH, "")
    by_env = {env_name(PASSTHROUGH, k): k for k in producer}
    for name, raw in env.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            producer[by_env.get(name, name[len(prefix):].lower().replace("_", "."))] = raw

    _check_producer(source, producer)
    sysinfo = SysinfoSettings.from_mapping(values.pop("sysinfo"), source=f"{source}: [sysinfo]")
    agent = AgentSettings(**values["agent"])
    agent = _resolve_identity(agent)
    etcd = EtcdSettings(**values["etcd"])
    fleet = FleetSettings(**values["fleet"])
    _check_fleet(source, etcd, fleet, agent.id or agent.ip)
    return Settings(
        kafka=KafkaSettings(producer=producer, **values["kafka"]),
        etcd=etcd,
        agent=agent,
        fleet=fleet,
        kubernetes=KubernetesSettings(**values["kubernetes"]),
        collect_files=values["collect"].get("files", "[]"),
        sysinfo=sysinfo,
        source=source,
        warnings=tuple(warnings),
    )


def _check_producer(source: str, producer: Mapping[str, str]) -> None:
    """[kafka.producer] is librdkafka's, passed as it is, but for what the delivery promise rests on:
    with `delivery.report.only.error` true librdkafka reports no success, so no batch would ever be
    acknowledged and every file would stop at its offset."""
    value = producer.get("delivery.report.only.error")
    if value is not None and value.strip().lower() not in ("false", "0", "f", "no", "off"):
        raise ConfigError(f"{source}: [kafka.producer] delivery.report.only.error = {value}: the agent moves a "
                          "file's offset on each message's delivery report, so it must stay false")


def _check_fleet(source: str, etcd: EtcdSettings, fleet: FleetSettings, host_id: str) -> None:
    """The host's own keys must lie outside the fleet prefix (an id 'fleet' would put them there),
    and the lease must outlive a keep-alive or two (one is sent every third of it)."""
    for key in etcd.keys_for(host_id):
        if key == fleet.prefix or key.startswith(fleet.prefix + "/"):
            raise ConfigError(f"{source}: host id {host_id!r}: its key {key} lies under [fleet] prefix "
                              f"{fleet.prefix}; choose another [agent] id or prefix")
    if fleet.status_ttl < 3:
        raise ConfigError(f"{source}: [fleet] status_ttl = {fleet.status_ttl:g}: expected at least 3 seconds "
                          "(the lease is kept alive every third of it)")


def detect_ip() -> str:
    """First non-loopback IPv4 of an interface that is up, else 127.0.0.1; opens no connection."""
    import psutil

    try:
        stats = psutil.net_if_stats()
        for name, addrs in psutil.net_if_addrs().items():
            if not stats.get(name) or not stats[name].isup:
                continue
            for addr in addrs:
                if addr.family == socket.AF_INET and not addr.address.startswith("127."):
                    return str(addr.address)
    except OSError:
        pass
    return "127.0.0.1"


def _resolve_identity(agent: AgentSettings) -> AgentSettings:
    from dataclasses import replace

    ip = detect_ip() if agent.ip == "auto" else agent.ip
    host = agent.hostname
    if not host or host.lower() == "auto":
        host = socket.gethostname()
    return replace(agent, ip=ip, hostname=host, id=agent.id or ip)


# librdkafka properties (and the [etcd] password) whose value is or can carry a secret:
# *.password, ssl.key.password, ssl.keystore.password, sasl.oauthbearer.client.secret,
# sasl.oauthbearer.config ("clientSecret=..."), sasl.oauthbearer.extensions, the assertion
# private key and its passphrase, sasl.jaas.config (Java clients' form, pasted by users),
# inline PEM (ssl.key.pem, ssl_key; ssl.certificate.pem too: a "certificate" often comes as a
# bundle with its key), and anything named token, credential or private.
SECRET_KEYS = re.compile(
    r"password|passphrase|secret|credential|token|private|jaas|"
    r"sasl\.oauthbearer\.(config|extensions)|ssl\.key|ssl_key|\.pem$", re.I)
# A value that is a secret whatever its key: a PEM private key, or a URL with a password in it.
SECRET_VALUE = re.compile(r"PRIVATE KEY|://[^/@\s:]*:[^/@\s]*@", re.I)


def redact(key: str, value: str) -> str:
    """The value to show in logs and `check` output: a secret becomes '***' (empty stays empty)."""
    if value and (SECRET_KEYS.search(key) or SECRET_VALUE.search(value)):
        return "***"
    return value


def describe(settings: Settings) -> list[str]:
    """One line per effective setting, secrets redacted, for the start-up log."""
    k = settings.kafka
    lines = [f"kafka.address={k.address} chan_size={k.chan_size} delivery={k.delivery}"
             f" batch_producer={k.batch_producer}"]
    if k.delivery == "exactly_once":
        lines[0] += (f" transactional_id={settings.transactional_id} transaction_interval={k.transaction_interval:g}"
                     f" transaction_max_messages={k.transaction_max_messages} offsets_topic={k.offsets_topic}")
    producer = sorted(settings.kafka.producer.items())
    lines.append("kafka.producer " + (" ".join(f"{k}={redact(k, v)}" for k, v in producer)
                                      or "(the agent's defaults: the producer logs its values when it starts)"))
    e = settings.etcd
    lines.append(f"etcd.address={','.join(e.address) or '(none: using [collect] files)'} "
                 f"collect_log_key={e.keys_for(settings.id)[0]} collect_sysinfo_key={e.keys_for(settings.id)[1]} "
                 f"username={e.username or '-'} password={redact('password', e.password) or '-'}")
    a = settings.agent
    f = settings.fleet
    lines.append(f"fleet id={settings.id} groups={','.join(a.groups) or '-'} prefix={f.prefix} "
                 f"status={'on' if f.status else 'off'} status_ttl={f.status_ttl:g} "
                 f"status_interval={f.status_interval:g}")
    lines.append(f"agent ip={a.ip} hostname={a.hostname} data_dir={a.data_dir} "
                 f"allowed_paths={','.join(a.allowed_paths)} http_listen={a.http_listen or 'off'}")
    s = settings.sysinfo
    lines.append(f"sysinfo enabled={s.enabled} topic={s.topic} interval={s.interval} format={s.format}")
    return lines
