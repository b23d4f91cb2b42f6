"""config.ini: defaults, the Go agent's keys, env overrides, bad values with one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from logagent.config import env_name, load, redact
from logagent.errors import ConfigError


def _ini(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.ini"
    p.write_text(text)
    return p


def test_empty_file_gives_every_default(tmp_path: Path):
    s = load(_ini(tmp_path, ""), environ={})
    assert s.kafka.address == "127.0.0.1:9092" and s.kafka.chan_size == 10000
    assert s.kafka.producer == {"acks": "all", "enable.idempotence": "true", "compression.type": "lz4"}
    assert s.etcd.address == ("127.0.0.1:2379",)
    assert s.etcd.collect_log_key == "/logagent/%s/collect_log/config"
    assert s.agent.allowed_paths == ("/var/log/**",)
    assert s.agent.http_listen == "127.0.0.1:9798"
    assert s.agent.max_line_bytes == 1024 * 1024
    assert s.sysinfo.topic == "collect_system_info" and s.sysinfo.interval == 5
    assert s.ip and s.hostname and s.warnings == ()


def test_go_agent_config_reads_unchanged(tmp_path: Path):
    s = load(_ini(tmp_path, """
[kafka]
address=127.0.0.1:9092,127.0.0.1:9093
chan_size=100000

[etcd]
address=127.0.0.1:2379
timeout=5
collect_log_key=/logagent/%s/collect_config
collect_sysinfo_key=/logagent/%s/sysinfo_config
"""), environ={"LOGAGENT_AGENT_IP": "10.1.2.3"})
    assert s.kafka.address == "127.0.0.1:9092,127.0.0.1:9093" and s.kafka.chan_size == 100000
    assert s.etcd.timeout == 5.0
    assert s.etcd.keys_for(s.ip) == ("/logagent/10.1.2.3/collect_config", "/logagent/10.1.2.3/sysinfo_config")
    assert s.warnings == ()


def test_environment_wins_over_file(tmp_path: Path):
    path = _ini(tmp_path, "[kafka]\nchan_size = 5\n[kafka.producer]\nlinger.ms = 50\n")
    s = load(path, environ={"LOGAGENT_KAFKA_CHAN_SIZE": "7", "LOGAGENT_KAFKA_PRODUCER_LINGER_MS": "9",
                            "LOGAGENT_KAFKA_PRODUCER_SASL_USERNAME": "u", "LOGAGENT_ETCD_ADDRESS": "",
                            "LOGAGENT_SYSINFO_FORMAT": "influx"})
    assert s.kafka.chan_size == 7
    assert s.kafka.producer["linger.ms"] == "9" and s.kafka.producer["sasl.username"] == "u"
    assert s.etcd.address == ()
    assert s.sysinfo.format == "influx"
    assert env_name("kafka.producer", "enable.idempotence") == "LOGAGENT_KAFKA_PRODUCER_ENABLE_IDEMPOTENCE"


@pytest.mark.parametrize("text, needle", [
    ("[kafka]\nchan_size = abc\n", "[kafka] chan_size = 'abc': expected an integer >= 1"),
    ("[kafka]\nchan_size = -4\n", "[kafka] chan_size = '-4': expected an integer >= 1"),
    ("[kafka]\naddress = nohostport\n", "[kafka] address = 'nohostport': expected comma-separated host:port"),
    ("[etcd]\naddress = 127.0.0.1:99999\n", "[etcd] address = '127.0.0.1:99999'"),
    ("[agent]\nallowed_paths = var/log/*\n", "expected comma-separated absolute path globs"),
    ("[agent]\nip = 1.2.3\n", "[agent] ip = '1.2.3': expected auto or an IP address"),
    ("[collect]\nfiles = [oops\n", "[collect] files = '[oops': expected a JSON array"),
    ("[sysinfo]\ninterval = 0\n", "interval"),
    ("not an ini", "not a valid ini file"),
])
def test_bad_values_name_file_section_key_value_and_expectation(tmp_path: Path, text: str, needle: str):
    path = _ini(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path, environ={})
    message = str(info.value)
    assert needle in message and str(path) in message and "\n" not in message


def test_bad_env_value_names_the_variable(tmp_path: Path):
    with pytest.raises(ConfigError, match="environment LOGAGENT_KAFKA_CHAN_SIZE = 'x'"):
        load(_ini(tmp_path, ""), environ={"LOGAGENT_KAFKA_CHAN_SIZE": "x"})


def test_missing_file_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load(tmp_path / "nope.ini", environ={})


def test_unknown_keys_and_sections_are_warnings(tmp_path: Path):
    s = load(_ini(tmp_path, "[kafka]\nadress = x\n[kafak]\na = 1\n"), environ={})
    assert any("unknown key [kafka] adress" in w for w in s.warnings)
    assert any("unknown section [kafak]" in w for w in s.warnings)


def test_secrets_are_redacted():
    assert redact("sasl.password", "hunter2") == "***"
    assert redact("ssl.key.password", "x") == "***"
    assert redact("sasl.username", "bob") == "bob"
