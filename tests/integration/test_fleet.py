"""Fleet control end to end (issue 22): real etcd, real Kafka, agents as processes.

Group configs with host overrides, applied live; the status each host writes back; `fleet status`.
Each test has a fleet prefix of its own (its agents see no other test's keys). Several agents on
one machine read a shared file: each message says its host's ip, so delivery is checked per host.
"""

from __future__ import annotations

import json

from tests.kit import KafkaReader, new_topic, wait_until
from tests.kit.fleet import append, cli_config, entries, fleet_prefix, host_tally, lines_of, logagent, unique


def test_one_group_write_reconfigures_its_hosts_live_with_host_overrides(make_agent, kafka, etcd, logdir,
                                                                         tmp_path):
    prefix, web, other = fleet_prefix(), unique("web"), unique("db")
    cli = cli_config(tmp_path / "cli.ini", etcd, prefix, f"{logdir}/**")
    shared, extra, own_a, own_b, later = (logdir / n for n in ("shared.log", "extra.log", "own-a.log", "own-b.log",
                                                                "later.log"))
    t_shared, t_extra, t_b, t_own = new_topic("shared"), new_topic("extra"), new_topic("b-only"), new_topic("own")
    for path in (shared, extra, own_a, own_b, later):
        path.touch()
    done = logagent("config", "set-collect", "-c", str(cli), "--group", web, "-",
                    stdin=entries((shared, t_shared), (extra, t_extra)))
    assert done.returncode == 0, done.stderr
    # host b: its own file, shared.log into another topic, extra.log removed
    done = logagent("config", "set-collect", "-c", str(cli), "--id", "host-b", "-",
                    stdin=json.dumps([{"path": str(shared), "topic": t_b, "start": "beginning"},
                                      {"path": str(extra), "remove": True},
                                      {"path": str(own_b), "topic": t_own, "start": "beginning"}]))
    assert done.returncode == 0, done.stderr
    logagent("config", "set-collect", "-c", str(cli), "--id", "host-a", "-", stdin=entries((own_a, t_own)))
    fleet = {"prefix": prefix, "status": "false"}
    a = make_agent(etcd=etcd, ip="127.0.10.1", data_dir=tmp_path / "a",
                   extra={"agent": {"id": "host-a", "groups": web}, "fleet": fleet})
    b = make_agent(etcd=etcd, ip="127.0.10.2", data_dir=tmp_path / "b",
                   extra={"agent": {"id": "host-b", "groups": f"{other}, {web}"}, "fleet": fleet})
    c = make_agent(etcd=etcd, ip="127.0.10.3", data_dir=tmp_path / "c",  # not in the group: untouched
                   extra={"agent": {"id": "host-c", "groups": other}, "fleet": fleet})
    first = [f"s{i}" for i in range(50)]
    append(shared, first)
    append(extra, ["e0", "e1"])
    append(own_a, ["a0"])
    append(own_b, ["b0"])
    topics = (t_shared, t_extra, t_b, t_own)
    with KafkaReader(kafka, *topics) as reader:
        reader.read(50 + 2 + 50 + 1 + 1, timeout=30)

        # One write to the group key: both of its hosts start later.log, live; host-c does not.
        done = logagent("config", "set-collect", "-c", str(cli), "--group", web, "-",
                        stdin=entries((shared, t_shared), (extra, t_extra), (later, t_extra)))
        assert done.returncode == 0, done.stderr
        for agent in (a, b):
            wait_until(lambda agent=agent: "applied 3 entries" in agent.log_text()
                       or "applied 4 entries" in agent.log_text(), 10, what="the group change applied")
        more = [f"s{i}" for i in range(50, 80)]
        append(shared, more)
        append(later, ["l0", "l1"])
        reader.read(104 + 30 * 2 + 2 * 2, timeout=30)
        reader.settle(quiet=2.0)
        values = reader.values()
    for ip in ("127.0.10.1", "127.0.10.2"):
        t = host_tally(values, ip, shared, first + more)
        assert not t.missing and t.duplicated == 0, (ip, t.describe())
        assert lines_of(values, ip, later) == ["l0", "l1"]
    by_topic = {(v["ip"], v["path"]): m.topic() for v, m in zip(values, reader.messages, strict=True)}
    assert by_topic[("127.0.10.1", str(shared))] == t_shared and by_topic[("127.0.10.2", str(shared))] == t_b
    assert lines_of(values, "127.0.10.1", extra) == ["e0", "e1"] and lines_of(values, "127.0.10.2", extra) == []
    assert lines_of(values, "127.0.10.2", own_b) == ["b0"] and lines_of(values, "127.0.10.1", own_a) == ["a0"]
    assert not any(v["ip"] == "127.0.10.3" for v in values)

    # Where each entry of host-b comes from, with the revisions.
    done = logagent("config", "show", "-c", str(cli), "--effective", "--id", "host-b", "--groups", f"{other},{web}")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"{shared} -> {t_b}    [host: /logagent/host-b/collect_log/config rev " in out
    assert f"replaces group {web}: {prefix}/config/groups/{web}/collect_log rev " in out
    assert f"{later} -> {t_extra}    [group {web}: {prefix}/config/groups/{web}/collect_log rev " in out
    assert f"removed {extra}    [host: /logagent/host-b/collect_log/config rev " in out
    effective = json.loads(logagent("config", "show", "-c", str(cli), "--effective", "--id", "host-b",
                                    "--groups", f"{other},{web}", "--json").stdout)
    assert [e["path"] for e in effective["collect"]] == [str(later), str(shared), str(own_b)]
    for agent in (a, b, c):
        assert agent.stop() == 0


def test_a_bad_group_value_is_refused_and_the_last_good_one_keeps_running(make_agent, kafka, etcd, logdir,
                                                                          tmp_path):
    prefix, web = fleet_prefix(), unique("web")
    cli = cli_config(tmp_path / "cli.ini", etcd, prefix, f"{logdir}/**")
    app, topic = logdir / "app.log", new_topic("app")
    app.touch()
    key = f"{prefix}/config/groups/{web}/collect_log"
    assert logagent("config", "set-collect", "-c", str(cli), "--group", web, "-",
                    stdin=entries((app, topic))).returncode == 0
    agent = make_agent(etcd=etcd, ip="127.0.11.1", data_dir=tmp_path / "a",
                       extra={"agent": {"id": "h1", "groups": web}, "fleet": {"prefix": prefix, "status": "false"}})
    # The CLI refuses a bad value (nothing written); written behind its back, the agent refuses it.
    done = logagent("config", "set-collect", "-c", str(cli), "--group", web, "-", stdin="[{broken")
    assert done.returncode == 2 and "not valid JSON" in done.stderr
    from logagent.config.settings import EtcdSettings
    from logagent.control.etcd_client import connect

    with connect(EtcdSettings(address=(etcd,))) as kv:
        kv.put(key, "[{broken")
        wait_until(lambda: agent.metric("logagent_config_errors_total", key=key) >= 1, 10, what="refusal counted")
        kv.put(key, entries((app, topic), ("/etc/passwd", topic)))  # one bad entry: the other runs
        wait_until(lambda: agent.metric("logagent_config_errors_total", key=key) >= 2, 10, what="entry refused")
    append(app, ["one", "two"])
    with KafkaReader(kafka, topic) as reader:
        reader.read(2)
        reader.settle(quiet=1.0)
        assert reader.data() == ["one", "two"]
    text = agent.log_text()
    assert f"{key}: not valid JSON" in text and "the last good configuration stays in force" in text
    assert f"{key} entry 1 ('/etc/passwd'): path '/etc/passwd' is outside [agent] allowed_paths" in text
    assert agent.stop() == 0
