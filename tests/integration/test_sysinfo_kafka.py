"""Host metrics through the real agent into the real broker, in both formats."""

from __future__ import annotations

import math
import re

from tests.kit import KafkaReader, new_topic, wait_until

MEASUREMENTS = {"cpu", "mem", "swap", "disk", "system"}


def test_json_samples_have_names_tags_and_numeric_fields(make_agent, kafka):
    topic = new_topic("sys")
    agent = make_agent(extra={"sysinfo": {"enabled": "true", "topic": topic, "interval": "0.5"}})
    with KafkaReader(kafka, topic) as reader:
        reader.read(40, timeout=30)
        samples = reader.values()
        keys = {m.key() for m in reader.messages}
    names = {s["name"] for s in samples}
    assert names >= MEASUREMENTS, names
    assert keys == {b"127.0.0.1"}
    for s in samples:
        assert s["tags"]["host"] == "test-host" and s["tags"]["ip"] == "127.0.0.1"
        assert isinstance(s["timestamp"], int) and s["timestamp"] > 1_700_000_000
        assert s["fields"], s
        for value in s["fields"].values():
            assert isinstance(value, (int, float)) and not isinstance(value, bool)
            assert math.isfinite(value)
    cpu_total = [s for s in samples if s["name"] == "cpu" and s["tags"].get("cpu") == "cpu-total"]
    assert cpu_total and 0 <= cpu_total[0]["fields"]["usage_percent"] <= 100
    system = next(s for s in samples if s["name"] == "system")
    assert {"load1", "load5", "load15", "uptime", "n_cpus"} <= set(system["fields"])
    assert agent.metric("logagent_sysinfo_samples_total") >= 40
    assert agent.stop() == 0


LINE = re.compile(r'^(?P<m>[^, ]+)(?P<tags>(,[^ ]+)*) (?P<fields>\S+) (?P<ts>\d{19})$')


def test_influx_line_protocol_samples(make_agent, kafka):
    topic = new_topic("influx")
    make_agent(extra={"sysinfo": {"enabled": "true", "topic": topic, "interval": "0.5", "format": "influx"}})
    with KafkaReader(kafka, topic) as reader:
        reader.read(20, timeout=30)
        lines = [m.value().decode() for m in reader.messages]
    names = set()
    for line in lines:
        match = LINE.match(line)
        assert match, line
        names.add(match["m"])
        assert "host=test-host" in match["tags"] and "ip=127.0.0.1" in match["tags"]
        for field in match["fields"].split(","):
            _key, value = field.split("=", 1)
            assert re.fullmatch(r"-?\d+i|-?[\d.]+(e[+-]?\d+)?|true|false|\".*\"", value), field
            assert "nan" not in value.lower() and "inf" not in value.lower()
    assert names >= MEASUREMENTS
    assert not any(line.startswith("{") for line in lines)


def test_etcd_interval_change_applies_live_and_zero_is_refused(make_agent, kafka, etcd):
    import json as _json
    import time

    from logagent.config.settings import EtcdSettings
    from logagent.control.etcd_client import connect

    topic = new_topic("sysrate")
    ip = "127.7.7.7"
    key = f"/logagent/{ip}/collect_sysinfo/config"
    with connect(EtcdSettings(address=(etcd,))) as kv:
        kv.put(key, _json.dumps({"interval": 2, "topic": topic, "enabled": True}))
        agent = make_agent(etcd=etcd, ip=ip)

        def system_samples(reader: KafkaReader, seconds: float) -> int:
            reader.settle(quiet=0.1, timeout=0.5)
            before = sum(1 for v in reader.values() if v["name"] == "system")
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                reader.poll(0.2)
            return sum(1 for v in reader.values() if v["name"] == "system") - before

        with KafkaReader(kafka, topic) as reader:
            reader.read(1, timeout=20)
            slow = system_samples(reader, 4.0)
            kv.put(key, _json.dumps({"interval": 0.25, "topic": topic, "enabled": True}))
            time.sleep(0.5)
            fast = system_samples(reader, 4.0)
            assert slow <= 3 and fast >= 8, (slow, fast)
            kv.put(key, _json.dumps({"interval": 0, "topic": topic, "enabled": True}))
            wait_until(lambda: agent.metric("logagent_config_errors_total", key=key) >= 1, timeout=10,
                       what="interval 0 refused")
            still = system_samples(reader, 2.0)
            assert still >= 4, "a refused interval must not stop the reporter"
    assert "interval" in agent.log_text()
    assert agent.stop() == 0
