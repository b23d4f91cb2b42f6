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
    host_a, host_b, host_c = unique("host-a"), unique("host-b"), unique("host-c")
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
    done = logagent("config", "set-collect", "-c", str(cli), "--id", host_b, "-",
                    stdin=json.dumps([{"path": str(shared), "topic": t_b, "start": "beginning"},
                                      {"path": str(extra), "remove": True},
                                      {"path": str(own_b), "topic": t_own, "start": "beginning"}]))
    assert done.returncode == 0, done.stderr
    logagent("config", "set-collect", "-c", str(cli), "--id", host_a, "-", stdin=entries((own_a, t_own)))
    fleet = {"prefix": prefix, "status": "false"}
    a = make_agent(etcd=etcd, ip="127.0.10.1", data_dir=tmp_path / "a",
                   extra={"agent": {"id": host_a, "groups": web}, "fleet": fleet})
    b = make_agent(etcd=etcd, ip="127.0.10.2", data_dir=tmp_path / "b",
                   extra={"agent": {"id": host_b, "groups": f"{other}, {web}"}, "fleet": fleet})
    c = make_agent(etcd=etcd, ip="127.0.10.3", data_dir=tmp_path / "c",  # not in the group: untouched
                   extra={"agent": {"id": host_c, "groups": other}, "fleet": fleet})
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
    done = logagent("config", "show", "-c", str(cli), "--effective", "--id", host_b, "--groups", f"{other},{web}")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"{shared} -> {t_b}    [host: /logagent/{host_b}/collect_log/config rev " in out
    assert f"replaces group {web}: {prefix}/config/groups/{web}/collect_log rev " in out
    assert f"{later} -> {t_extra}    [group {web}: {prefix}/config/groups/{web}/collect_log rev " in out
    assert f"removed {extra}    [host: /logagent/{host_b}/collect_log/config rev " in out
    effective = json.loads(logagent("config", "show", "-c", str(cli), "--effective", "--id", host_b,
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
                       extra={"agent": {"id": unique("h1"), "groups": web},
                              "fleet": {"prefix": prefix, "status": "false"}})
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


# ---------------------------------------------------------------------------- status written back

def statuses(etcd: str, prefix: str, what: str = "status") -> dict[str, tuple[dict, int]]:
    """Host id -> (its status or seen record, how many times the key was written)."""
    from logagent.config.settings import EtcdSettings
    from logagent.control.etcd_client import connect

    with connect(EtcdSettings(address=(etcd,))) as kv:
        return {item.key.rsplit("/", 1)[1]: (json.loads(item.value), item.version)
                for item in kv.read_prefix(f"{prefix}/{what}/")[1]}


def test_status_is_written_back_under_a_lease_and_a_killed_host_goes_offline_within_the_ttl(
        make_agent, kafka, etcd, logdir, tmp_path):
    import time

    prefix, web = fleet_prefix(), unique("web")
    ha, hb = unique("host-a"), unique("host-b")
    cli = cli_config(tmp_path / "cli.ini", etcd, prefix, f"{logdir}/**")
    app, topic = logdir / "app.log", new_topic("app")
    app.touch()
    assert logagent("config", "set-collect", "-c", str(cli), "--group", web, "-",
                    stdin=entries((app, topic))).returncode == 0
    fleet = {"prefix": prefix, "status_ttl": "4"}
    a = make_agent(etcd=etcd, ip="127.0.12.1", data_dir=tmp_path / "a",
                   extra={"agent": {"id": ha, "groups": web}, "fleet": fleet})
    b = make_agent(etcd=etcd, ip="127.0.12.2", data_dir=tmp_path / "b",
                   extra={"agent": {"id": hb, "groups": web}, "fleet": fleet})
    append(app, ["one"])
    with KafkaReader(kafka, topic) as reader:
        reader.read(2)  # both hosts shipped it
    wait_until(lambda: {ha, hb} <= set(statuses(etcd, prefix)), 10, what="both statuses")
    effective = json.loads(logagent("config", "show", "-c", str(cli), "--effective", "--id", ha,
                                    "--json").stdout)
    assert effective["groups_from"] == "its status" and effective["groups"] == [web]
    group_key = f"{prefix}/config/groups/{web}/collect_log"
    wait_until(lambda: statuses(etcd, prefix)[ha][0]["delivered"] >= 1, 15, what="the counters written")
    doc, version = statuses(etcd, prefix)[ha]
    assert doc["state"] == "APPLIED" and doc["id"] == ha and doc["ip"] == "127.0.12.1"
    assert doc["config"]["hash"] == effective["hash"] and doc["groups"] == [web]
    assert doc["config"]["sources"][group_key] == effective["sources"][group_key] > 0
    assert doc["entries"][str(app)]["files"] == 1 and doc["kafka"]["reachable"] is True
    assert doc["version"] and doc["started"] and doc["errors"] == []

    # Nothing changes for 11 s (the status interval is 10 s): at most one more write.
    time.sleep(11)
    assert statuses(etcd, prefix)[ha][1] - version <= 1

    done = logagent("fleet", "status", "-c", str(cli))
    assert done.returncode == 0, done.stdout + done.stderr
    assert ha in done.stdout and "APPLIED" in done.stdout and "# 2 hosts, 2 ok" in done.stdout

    # kill -9: the status vanishes within the TTL (4 s) of the last keep-alive; fleet status says offline.
    a.kill()
    killed = time.monotonic()
    wait_until(lambda: ha not in statuses(etcd, prefix), 10, what="host a's status to expire")
    gone_after = time.monotonic() - killed
    assert gone_after <= 4 + 1.5, f"status outlived the TTL: {gone_after:.1f} s"
    done = logagent("fleet", "status", "-c", str(cli))
    assert done.returncode == 1
    line = next(x for x in done.stdout.splitlines() if x.startswith(ha))
    assert "offline" in line and effective["hash"] in line

    # A group value with a bad entry: host-b is FAILED with the refusal, and fleet status fails.
    assert logagent("config", "set-collect", "-c", str(cli), "--group", web, "--dry-run", "-",
                    stdin=entries((app, topic))).returncode == 0
    from logagent.config.settings import EtcdSettings
    from logagent.control.etcd_client import connect

    with connect(EtcdSettings(address=(etcd,))) as kv:
        kv.put(group_key, entries((app, topic), ("/etc/shadow", topic)))
    wait_until(lambda: statuses(etcd, prefix)[hb][0]["state"] == "FAILED", 10, what="host b FAILED")
    assert "/etc/shadow" in statuses(etcd, prefix)[hb][0]["errors"][0]
    done = logagent("fleet", "status", "-c", str(cli), "--group", web, "--json")
    assert done.returncode == 1
    table = {row["id"]: row for row in json.loads(done.stdout)}
    assert table[hb]["state"] == "FAILED" and table[hb]["desired"] is True
    assert table[ha]["state"] == "offline" and not table[ha]["desired"]  # the group key moved on

    # A clean stop says STOPPED (and then the seen record says stopped).
    assert b.stop() == 0
    last = statuses(etcd, prefix).get(hb)
    assert last is None or last[0]["state"] == "STOPPED"
    wait_until(lambda: hb not in statuses(etcd, prefix), 10, what="host b's stopped status to expire")
    assert statuses(etcd, prefix, "seen")[hb][0]["state"] == "STOPPED"
    done = logagent("fleet", "status", "-c", str(cli), "--json")
    assert {row["id"]: row["state"] for row in json.loads(done.stdout)} == {ha: "offline", hb: "stopped"}
    assert logagent("fleet", "forget", "-c", str(cli), ha).returncode == 0
    assert ha not in statuses(etcd, prefix, "seen")


# ---------------------------------------------------------------------------- staged rollout

def rollout_id_choosing(hosts: list[str], percent: float, count: int, stem: str) -> str:
    """A rollout id whose canaries at `percent` are exactly `count` of `hosts` (the choice is a hash)."""
    from logagent.control.fleet.rollout import chosen

    return next(f"{stem}-{n}" for n in range(10_000)
                if sum(chosen(h, f"{stem}-{n}", percent) for h in hosts) == count)


def test_a_bad_canary_reverts_by_itself_and_a_good_rollout_reaches_all_hosts_with_nothing_lost(
        make_agent, kafka, etcd, logdir, tmp_path):
    from tests.kit import LineWriter

    prefix, web = fleet_prefix(), unique("web")
    cli = cli_config(tmp_path / "cli.ini", etcd, prefix, f"{logdir}/**")
    shared, new, typo = logdir / "shared.log", logdir / "new.log", logdir / "shraed.log"
    t_old, t_new = new_topic("old"), new_topic("new")
    shared.touch()
    new.write_text("new 0\nnew 1\n")
    assert logagent("config", "set-collect", "-c", str(cli), "--group", web, "-",
                    stdin=entries((shared, t_old))).returncode == 0
    ids = [unique(f"h{i}") for i in range(4)]
    agents = {h: make_agent(etcd=etcd, ip=f"127.0.13.{i + 1}", data_dir=tmp_path / h,
                            extra={"agent": {"id": h, "groups": web}, "fleet": {"prefix": prefix, "status_ttl": "5"}})
              for i, h in enumerate(ids)}
    writer = LineWriter(shared, "shared", rate=200).start()
    try:
        rollouts_with_a_writer(prefix, web, cli, etcd, kafka, ids, agents, writer, shared, new, typo, t_old, t_new)
    finally:
        writer.stop()


def rollouts_with_a_writer(prefix, web, cli, etcd, kafka, ids, agents, writer, shared, new, typo, t_old, t_new):
    """The body of the rollout test, while `writer` appends to shared.log."""
    from logagent.control.fleet.rollout import chosen

    wait_until(lambda: all(statuses(etcd, prefix).get(h, ({}, 0))[0].get("state") == "APPLIED" for h in ids), 15,
               what="every host APPLIED")

    def rollout(*args: str, stdin: str | None = None) -> tuple[int, str]:
        done = logagent("fleet", "rollout", *args, "-c", str(cli), "--group", web, stdin=stdin)
        return done.returncode, done.stdout + done.stderr

    def report(host: str) -> dict:
        return (statuses(etcd, prefix).get(host, ({}, 0))[0].get("rollouts") or {}).get(web) or {}

    # 1. A bad candidate (a typo in the path) on one canary: it reverts by itself, the rollout halts.
    bad = rollout_id_choosing(ids, 25, 1, "bad")
    canary = next(h for h in ids if chosen(h, bad, 25))
    code, out = rollout("start", "--canary", "25%", "--bake", "3s", "--id", bad, "-", stdin=entries((typo, t_old)))
    assert code == 0, out
    assert f"canaries: {canary}" in out
    wait_until(lambda: report(canary).get("state") == "FAILED", 30, what="the bad canary FAILED")
    assert "shraed.log: the new entry found no file" in report(canary)["why"]
    doc = statuses(etcd, prefix)[canary][0]
    assert doc["state"] == "FAILED" and doc["entries"][str(shared)]["files"] == 1  # reverted: shared.log is back
    assert all(report(h) == {} and statuses(etcd, prefix)[h][0]["state"] == "APPLIED" for h in ids if h != canary)
    code, out = rollout("status")
    assert code == 1 and "halted: 1 canary failed" in out and f"{canary}: FAILED" in out
    code, out = rollout("advance")
    assert code == 1 and "not advanced: halted" in out
    code, out = rollout("abort")
    assert code == 0, out
    wait_until(lambda: statuses(etcd, prefix)[canary][0]["state"] == "APPLIED", 10, what="the canary clean again")

    # 2. A good candidate (shared.log into another topic, and new.log): 25 % -> 100 % -> promoted.
    good = rollout_id_choosing(ids, 25, 1, "good")
    first = next(h for h in ids if chosen(h, good, 25))
    candidate = entries((shared, t_new), (new, t_new))
    code, out = rollout("start", "--canary", "25%", "--bake", "2s", "--id", good, "-", stdin=candidate)
    assert code == 0, out
    wait_until(lambda: report(first).get("state") == "PASSED", 30, what="the first canary PASSED")
    assert all(report(h) == {} for h in ids if h != first)
    code, out = rollout("advance")
    assert code == 0 and "now at 100%" in out, out
    wait_until(lambda: all(report(h).get("state") == "PASSED" for h in ids), 30, what="every host PASSED")
    code, out = rollout("advance")
    assert code == 0 and "promoted rollout" in out, out
    group_key = f"{prefix}/config/groups/{web}/collect_log"
    wait_until(lambda: all(statuses(etcd, prefix)[h][0]["config"]["sources"].get(f"{prefix}/config/rollouts/{web}")
                           and report(h) == {} for h in ids), 15, what="the rollout ended on every host")
    done = logagent("fleet", "status", "-c", str(cli), "--json")
    assert done.returncode == 0, done.stdout
    assert len({row["hash"] for row in json.loads(done.stdout)}) == 1
    writer.stop()
    expected = writer.expected()
    with KafkaReader(kafka, t_old, t_new) as reader:
        reader.read(len(expected) * len(ids) + 2 * len(ids), timeout=60)
        reader.settle(quiet=2.0)
        values = reader.values()
    for i, h in enumerate(ids):
        ip = f"127.0.13.{i + 1}"
        t = host_tally(values, ip, shared, expected)
        assert not t.missing and t.duplicated == 0 and not t.unexpected, (h, t.describe())
        assert lines_of(values, ip, new) == ["new 0", "new 1"]
    assert statuses(etcd, prefix)[ids[0]][0]["config"]["sources"][group_key] > 0
    for agent in agents.values():
        assert agent.stop() == 0
