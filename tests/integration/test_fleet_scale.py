"""Twenty real agents on this machine under one fleet group (issue 22, item 7b).

Each agent collects its own file (its host key) and a shared file (the group key), into the real
Kafka, while writers append to all of them. A group change reaches every host; a bad candidate on
two canaries reverts by itself, the rollout halts and the other hosts are untouched; a good one
goes 10 % -> 100 % and is promoted; a kill -9 makes one host offline within the status TTL. Read
back from Kafka per host (each message says its host's ip): no line lost, none sent twice.
"""

from __future__ import annotations

import json
import time

from logagent.control.fleet.rollout import chosen
from tests.kit import KafkaReader, LineWriter, new_topic, wait_until
from tests.kit.fleet import cli_config, entries, fleet_prefix, host_tally, lines_of, logagent, unique

HOSTS = 20
TTL = 5


def test_twenty_agents_group_change_canaries_and_a_kill_lose_nothing(make_agent, kafka, etcd, logdir, tmp_path):
    t_begin = time.monotonic()
    prefix, group = fleet_prefix(), unique("fleet20")
    cli = cli_config(tmp_path / "cli.ini", etcd, prefix, f"{logdir}/**")
    ids = [unique(f"n{i:02d}") for i in range(HOSTS)]
    ips = {h: f"127.0.20.{i + 1}" for i, h in enumerate(ids)}
    shared, extra, typo = logdir / "shared.log", logdir / "extra.log", logdir / "sahred.log"
    own = {h: logdir / f"own-{h}.log" for h in ids}
    t_shared, t_moved, t_own, t_extra = new_topic("shared"), new_topic("moved"), new_topic("own"), new_topic("extra")
    shared.touch()
    extra.write_text("".join(f"x{i}\n" for i in range(10)))

    def cli_ok(*args: str, stdin: str | None = None) -> str:
        done = logagent(*args, "-c", str(cli), stdin=stdin)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def cli_fails(*args: str) -> str:
        done = logagent(*args, "-c", str(cli))
        assert done.returncode == 1, done.stdout + done.stderr
        return done.stdout + done.stderr

    cli_ok("config", "set-collect", "--group", group, "-", stdin=entries((shared, t_shared)))
    for h in ids:
        own[h].touch()
        cli_ok("config", "set-collect", "--id", h, "-", stdin=entries((own[h], t_own)))
    agents = {h: make_agent(etcd=etcd, ip=ips[h], data_dir=tmp_path / h, start=False,
                            extra={"agent": {"id": h, "groups": group}, "fleet": {"prefix": prefix,
                                                                                 "status_ttl": str(TTL)}})
              for h in ids}
    for agent in agents.values():
        agent.start(wait_ready=False)
    for agent in agents.values():
        agent.wait_ready(timeout=90)
    writers = [LineWriter(shared, "shared", rate=40, burst=4).start()]
    writers += [LineWriter(own[h], f"own-{h}", rate=8, burst=2).start() for h in ids]
    try:
        statuses = fleet_statuses(cli)
        wait_until(lambda: len(statuses()) == HOSTS and all(r["state"] == "APPLIED" and r["desired"]
                                                             for r in statuses()), 60, what="20 hosts APPLIED")

        # 1. One group write: every host takes it.
        before = {r["id"]: r["hash"] for r in statuses()}
        cli_ok("config", "set-collect", "--group", group, "-", stdin=entries((shared, t_shared), (extra, t_extra)))
        # (each host's hash differs from the others': its own file is in it)
        wait_rows(statuses, lambda rows: all(r["desired"] and r["state"] == "APPLIED" and r["hash"] != before[r["id"]]
                                             for r in rows), 30, "the group change on every host")

        # 2. A bad candidate (a typo in a path) on 2 canaries: both revert by themselves, the rollout halts.
        bad = next(f"bad-{n}" for n in range(10_000) if sum(chosen(h, f"bad-{n}", 10) for h in ids) == 2)
        canaries = {h for h in ids if chosen(h, bad, 10)}
        cli_ok("fleet", "rollout", "start", "--group", group, "--canary", "10%", "--bake", "2s", "--id", bad, "-",
               stdin=entries((typo, t_shared), (extra, t_extra)))
        wait_until(lambda: {r["id"] for r in statuses() if (r["rollouts"].get(group) or {}).get("state") == "FAILED"}
                   == canaries, 40, what="both bad canaries FAILED")
        rows = {r["id"]: r for r in statuses()}
        assert all("sahred.log: the new entry found no file" in rows[h]["rollouts"][group]["why"] for h in canaries)
        assert all(rows[h]["rollouts"] == {} and rows[h]["state"] == "APPLIED" for h in ids if h not in canaries)
        assert "halted: 2 canaries failed" in cli_fails("fleet", "rollout", "status", "--group", group)
        assert "not advanced: halted" in cli_fails("fleet", "rollout", "advance", "--group", group)
        assert "FAILED" in cli_fails("fleet", "status")  # scripts can gate on it
        cli_ok("fleet", "rollout", "abort", "--group", group)

        # 3. A good candidate (shared.log into another topic): 10 % -> 100 % -> promoted.
        good = next(f"good-{n}" for n in range(10_000) if sum(chosen(h, f"good-{n}", 10) for h in ids) == 2)
        cli_ok("fleet", "rollout", "start", "--group", group, "--canary", "10%", "--bake", "2s", "--id", good, "-",
               stdin=entries((shared, t_moved), (extra, t_extra)))

        def passed() -> set[str]:
            return {r["id"] for r in statuses() if (r["rollouts"].get(group) or {}).get("state") == "PASSED"}

        wait_until(lambda: passed() == {h for h in ids if chosen(h, good, 10)}, 40, what="2 canaries PASSED")
        assert "now at 100%" in cli_ok("fleet", "rollout", "advance", "--group", group, "--to", "100%")
        wait_until(lambda: passed() == set(ids), 60, what="every host PASSED")
        assert "promoted" in cli_ok("fleet", "rollout", "advance", "--group", group)
        wait_rows(statuses, lambda rows: all(r["rollouts"] == {} and r["desired"] and r["state"] == "APPLIED"
                                             for r in rows), 30, "the promoted list on every host")
    finally:
        for writer in writers:
            writer.stop()
    expected_shared = writers[0].expected()
    expected_own = {h: w.expected() for h, w in zip(ids, writers[1:], strict=True)}

    # 4. Everything shipped; then kill -9 one host: offline within the TTL, nothing sent twice after.
    total = HOSTS * (len(expected_shared) + 10) + sum(len(v) for v in expected_own.values())

    def check_every_host(values: list[dict]) -> None:
        for h in ids:
            where = (h, agents[h].log_path)  # on a failure: which host, and its log to read
            t = host_tally(values, ips[h], shared, expected_shared)
            assert not t.missing and t.duplicated == 0 and not t.unexpected, (where, "shared", t.describe())
            t = host_tally(values, ips[h], own[h], expected_own[h])
            assert not t.missing and t.duplicated == 0 and not t.unexpected, (where, "own", t.describe())
            assert lines_of(values, ips[h], extra) == [f"x{i}" for i in range(10)], where

    with KafkaReader(kafka, t_shared, t_moved, t_own, t_extra) as reader:
        try:
            reader.read(total, timeout=90)
        except AssertionError:
            check_every_host(reader.values())  # says which host's lines are missing
            raise
        victim = ids[7]
        agents[victim].kill()
        killed = time.monotonic()
        wait_until(lambda: next(r for r in statuses() if r["id"] == victim)["state"] == "offline", TTL + 5,
                   what="the killed host offline")
        assert time.monotonic() - killed <= TTL + 2.5
        assert "offline" in cli_fails("fleet", "status")
        agents[victim].start()  # back: it resumes from its registry and sends nothing again
        wait_until(lambda: next(r for r in statuses() if r["id"] == victim)["state"] == "APPLIED", 30,
                   what="the restarted host APPLIED")
        reader.settle(quiet=3.0)
        values = reader.values()
    check_every_host(values)
    assert len(values) == total
    for agent in agents.values():
        assert agent.stop() == 0
    print(f"20 agents: {total} messages checked, {time.monotonic() - t_begin:.0f} s")


def fleet_statuses(cli):  # type: ignore[no-untyped-def]
    """A function returning `fleet status --json`'s rows (whatever its exit status)."""
    def rows() -> list[dict]:
        done = logagent("fleet", "status", "-c", str(cli), "--json")
        return json.loads(done.stdout) if done.stdout.strip() else []

    return rows


def wait_rows(statuses, cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """Until cond(rows of fleet status) holds; the last rows in the failure."""
    last: list[dict] = []

    def check() -> bool:
        last[:] = statuses()
        return bool(cond(last))

    try:
        wait_until(check, timeout, what=what)
    except AssertionError as exc:
        summary = [(r["id"], r["state"], r["hash"], r["desired"], r["stale"], r["errors"][:1]) for r in last]
        raise AssertionError(f"{exc}; last rows: {summary}") from None
