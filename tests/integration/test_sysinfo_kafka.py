"""Host metrics through the real agent into the real broker, in both formats."""

from __future__ import annotations

import math
import re

from tests.support import KafkaReader, new_topic

MEASUREMENTS = {"cpu", "mem", "swap", "disk", "system"}


def test_json_samples_have_names_tags_and_numeric_fields(make_agent, kafka):
    topic = new_topic("sys")
    agent = make_agent(extra={"sysinfo": {"enabled": "true", "topic": topic, "interval": "0.5"}})
    with KafkaReader(kafka, topic) as reader:
        reader.read(40, timeout=30)
        samples = reader.values()
        keys = {m.key() for m in reader.messages}
    names = {s["name"] for s in samples}
    assert MEASUREMENTS <= names, names
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
            key, value = field.split("=", 1)
            assert re.fullmatch(r"-?\d+i|-?[\d.]+(e[+-]?\d+)?|true|false|\".*\"", value), field
            assert "nan" not in value.lower() and "inf" not in value.lower()
    assert MEASUREMENTS <= names
    assert not any(line.startswith("{") for line in lines)
