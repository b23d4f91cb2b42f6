"""config.ini: defaults, the Go agent's keys, env overrides, bad values with one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from logagent.config.settings import describe, env_name, load, redact
from logagent.errors import ConfigError


def _ini(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.ini"
    p.write_text(text)
    return p


def test_empty_file_gives_every_default(tmp_path: Path):
    s = load(_ini(tmp_path, ""), environ={})
    assert s.kafka.address == "127.0.0.1:9092" and s.kafka.chan_size == 10000
    assert s.kafka.producer == {}  # the operator's keys only; the agent's defaults are the sink's
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
    ("[collect]\nfiles = null\n", "[collect] files = 'null': expected a JSON array of entries"),
    ("[collect]\nfiles = [NaN]\n", "NaN is not JSON"),
    ("[collect]\nfiles = " + "[" * 100 + "]" * 100 + "\n", "nested deeper than 64 levels"),
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


def test_unknown_keys_and_sections_are_warnings_with_the_nearest_known_name(tmp_path: Path):
    path = _ini(tmp_path, "[kafka]\nadress = x\n[kafak]\na = 1\n[agent]\nzzz = 1\n[etcd]\ncollect_log = k\n")
    s = load(path, environ={})
    assert f"{path}: [kafka] adress: unknown key, ignored, did you mean address?" in s.warnings
    assert f"{path}: [kafak]: unknown section, ignored, did you mean [kafka]?" in s.warnings
    assert f"{path}: [agent] zzz: unknown key, ignored" in s.warnings  # nothing close: no guess
    assert any("[etcd] collect_log: unknown key, ignored, did you mean collect_log_key?" in w for w in s.warnings)
    assert s.kafka.address == "127.0.0.1:9092"  # the typo'd key is not used


# Every librdkafka property that can hold a secret (and a few that cannot), with a value that
# must never be shown in the start-up log (describe) nor in `logagent check`.
SECRET_PROPERTIES = {
    "sasl.password": "kafka-sasl-pw-1",
    "ssl.key.password": "ssl-key-pw-2",
    "ssl.keystore.password": "keystore-pw-3",
    "ssl.truststore.password": "truststore-pw-4",
    "sasl.oauthbearer.client.secret": "oauth-client-secret-5",
    "sasl.oauthbearer.config": "principal=svc clientSecret=oauth-config-secret-6",
    "sasl.oauthbearer.extensions": "token=oauth-extension-7",
    "sasl.oauthbearer.assertion.private.key.passphrase": "assertion-pass-8",
    "sasl.oauthbearer.assertion.private.key.pem": "-----BEGIN PRIVATE KEY-----assertion-key-9",
    "sasl.oauthbearer.token.endpoint.url": "https://svc:endpoint-pw-10@idp.example/token",
    "ssl.key.pem": "-----BEGIN PRIVATE KEY-----\nkey-pem-11\n-----END PRIVATE KEY-----",
    "ssl_key": "-----BEGIN RSA PRIVATE KEY-----key-12",
    "ssl.certificate.pem": "-----BEGIN CERTIFICATE-----cert-bundle-13 -----BEGIN PRIVATE KEY-----",
    "sasl.jaas.config": 'org.apache.kafka.common.security.plain.PlainLoginModule password="jaas-pw-14";',
}
PUBLIC_PROPERTIES = {"sasl.username": "bob", "security.protocol": "SASL_SSL", "linger.ms": "5",
                     "sasl.mechanism": "PLAIN", "ssl.ca.location": "/etc/ssl/ca.pem"}


@pytest.mark.parametrize("key", sorted(SECRET_PROPERTIES))
def test_every_secret_property_is_redacted(key: str):
    assert redact(key, SECRET_PROPERTIES[key]) == "***"
    assert redact(key.upper(), SECRET_PROPERTIES[key]) == "***"  # librdkafka names are case-sensitive, users are not
    assert redact(key, "") == ""


def test_a_private_key_or_a_url_password_is_hidden_under_any_name():
    assert redact("some.future.property", "x -----BEGIN EC PRIVATE KEY----- y") == "***"
    assert redact("https.proxy", "http://u:pw@127.0.0.1:3128") == "***"
    for key, value in PUBLIC_PROPERTIES.items():
        assert redact(key, value) == value


def test_describe_shows_no_secret(tmp_path: Path):
    lines = "".join(f"{k} = {v}\n" for k, v in {**SECRET_PROPERTIES, **PUBLIC_PROPERTIES}.items()
                    if "\n" not in v)
    path = _ini(tmp_path, f"[kafka.producer]\n{lines}[etcd]\nusername = root\npassword = etcd-pw-15\n")
    env = {"LOGAGENT_KAFKA_PRODUCER_SSL_KEY_PEM": SECRET_PROPERTIES["ssl.key.pem"]}
    text = "\n".join(describe(load(path, environ=env)))
    for secret in [*SECRET_PROPERTIES.values(), "etcd-pw-15"]:
        for word in secret.replace("=", " ").replace('"', " ").split():
            if any(ch.isdigit() for ch in word):  # the distinctive part of each secret
                assert word not in text, (word, text)
    assert "sasl.username=bob" in text and "username=root" in text and "password=***" in text


def test_go_agent_quoted_values_are_read_without_their_quotes(tmp_path: Path):
    # As the Go agent's go-ini read them: double, single and back quotes are stripped.
    s = load(_ini(tmp_path, """
[kafka]
address = "127.0.0.1:9092,127.0.0.1:9093"
chan_size = "100000"

[kafka.producer]
linger.ms = '5'

[etcd]
address = '127.0.0.1:2379'
timeout = `5`
collect_log_key = "/logagent/%s/collect_config"
collect_sysinfo_key = \"\"\"/logagent/%s/sysinfo_config\"\"\"
"""), environ={"LOGAGENT_AGENT_IP": "10.1.2.3"})
    assert s.kafka.address == "127.0.0.1:9092,127.0.0.1:9093" and s.kafka.chan_size == 100000
    assert s.kafka.producer["linger.ms"] == "5"
    assert s.etcd.address == ("127.0.0.1:2379",) and s.etcd.timeout == 5.0
    assert s.etcd.keys_for(s.ip) == ("/logagent/10.1.2.3/collect_config", "/logagent/10.1.2.3/sysinfo_config")
    assert s.warnings == ()


def test_a_value_with_inner_quotes_only_is_kept(tmp_path: Path):
    s = load(_ini(tmp_path, '[etcd]\nusername = a"b\npassword = "x\n'), environ={})
    assert s.etcd.username == 'a"b' and s.etcd.password == '"x'


@pytest.mark.parametrize("text, where, kind", [
    ("root:$6$fake-secret-hash:19000:0:99999:7:::\ndaemon:*:19000\n", ":1:", "before the first [section]"),
    ("[agent]\nip = auto\n  \tcontinued\nfake-secret-line-without-equals\n", ":4:", "neither 'key = value'"),
])
def test_a_file_that_is_not_ini_is_named_by_line_never_by_content(tmp_path: Path, text: str, where: str,
                                                                   kind: str):
    path = _ini(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path, environ={})
    message = str(info.value)
    assert message.startswith(f"{path}{where} not a valid ini file") and kind in message, message
    assert "fake-secret" not in message and "\n" not in message


def test_validating_config_and_values_imports_no_sampler_metrics_or_etcd_watch():
    # config/settings.py, the CLI's validators and checks must not pull psutil, prometheus_client or the
    # Kafka/etcd clients (issue 17 step 3), and etcd_client no longer imports control/etcd.py (a cycle).
    import subprocess
    import sys

    code = ("import sys, logagent.config.settings, logagent.cli.config_cmd, logagent.cli.checks, "
            "logagent.control.etcd_client\n"
            "heavy = ('psutil', 'prometheus_client', 'confluent_kafka', 'grpc', 'pyetcd')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in "
            "('logagent.control.etcd', 'logagent.sources.host.reporter', 'logagent.runtime.metrics')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


# ---------------------------------------------------------------------------- fleet identity (issue 22)

def test_host_id_defaults_to_the_ip_so_the_per_ip_keys_stay(tmp_path: Path):
    s = load(_ini(tmp_path, "[agent]\nip = 10.1.2.3\n"), environ={})
    assert s.id == "10.1.2.3" and s.agent.groups == ()
    assert s.etcd.keys_for(s.id) == ("/logagent/10.1.2.3/collect_log/config",
                                     "/logagent/10.1.2.3/collect_sysinfo/config")
    assert s.fleet.prefix == "/logagent/fleet" and s.fleet.status and s.fleet.status_ttl == 15


def test_host_id_and_groups_from_the_file_and_the_environment(tmp_path: Path):
    path = _ini(tmp_path, "[agent]\nip = 10.1.2.3\nid = web-1.eu\ngroups = web, eu-west ,web\n")
    s = load(path, environ={})
    assert s.id == "web-1.eu" and s.ip == "10.1.2.3" and s.agent.groups == ("web", "eu-west")
    assert s.etcd.keys_for(s.id)[0] == "/logagent/web-1.eu/collect_log/config"
    s = load(path, environ={"LOGAGENT_AGENT_GROUPS": "db,eu-west", "LOGAGENT_AGENT_ID": "db-7"})
    assert s.id == "db-7" and s.agent.groups == ("db", "eu-west")
    assert any("fleet id=db-7 groups=db,eu-west prefix=/logagent/fleet" in line for line in describe(s))


@pytest.mark.parametrize("ini, problem", [
    ("[agent]\nid = a/b\n", "host id 'a/b' refused"),
    ("[agent]\nid = ..\n", "host id '..' refused"),
    ("[agent]\nid = fleet\n", "reserved"),
    ("[agent]\nid = FLEET\n", "reserved"),
    ("[agent]\ngroups = web, a b\n", "group 'a b' refused"),
    ("[agent]\ngroups = web,../x\n", "group '../x' refused"),
    ("[agent]\ngroups = web,fleet\n", "reserved"),
    ("[fleet]\nprefix = logagent/fleet\n", "an absolute etcd key prefix"),
    ("[fleet]\nprefix = /logagent/../x\n", "an absolute etcd key prefix"),
    ("[fleet]\nstatus_ttl = 1\n", "at least 3 seconds"),
    ("[agent]\nid = web-1\n[fleet]\nprefix = /logagent/web-1\n", "lies under [fleet] prefix"),
])
def test_names_that_could_escape_the_prefix_are_refused(tmp_path: Path, ini: str, problem: str):
    with pytest.raises(ConfigError) as err:
        load(_ini(tmp_path, ini), environ={})
    assert problem in str(err.value) and "\n" not in str(err.value)


def test_a_control_character_in_the_id_is_refused_from_the_environment(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        load(_ini(tmp_path, ""), environ={"LOGAGENT_AGENT_ID": "web\n1"})
    assert "environment LOGAGENT_AGENT_ID" in str(err.value) and "refused" in str(err.value)


@pytest.mark.parametrize("value", ["true", "True", "1", "yes"])
def test_producer_keys_that_would_stop_every_acknowledgement_are_refused(tmp_path: Path, value: str):
    path = _ini(tmp_path, f"[kafka.producer]\ndelivery.report.only.error = {value}\n")
    with pytest.raises(ConfigError, match=r"\[kafka.producer\] delivery.report.only.error = .*must stay false"):
        load(path, environ={})
    with pytest.raises(ConfigError, match=r"delivery\.report\.only\.error"):
        load(_ini(tmp_path, ""), environ={"LOGAGENT_KAFKA_PRODUCER_DELIVERY_REPORT_ONLY_ERROR": value})
    assert load(_ini(tmp_path, "[kafka.producer]\ndelivery.report.only.error = false\n"),
                environ={}).kafka.producer["delivery.report.only.error"] == "false"
