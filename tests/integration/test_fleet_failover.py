"""Lease and watch failover on a 3-member etcd cluster (issue 22): kill -9 the member the agent is
connected to; its status key survives (its lease is kept alive through another member) and a config
change written to the two members left still applies, live."""

from __future__ import annotations

import json
import time

import psutil

from devstack.stack import EtcdCluster
from logagent.config.settings import EtcdSettings
from logagent.control.etcd_client import connect
from logagent.errors import EtcdError
from tests.kit import KafkaReader, new_topic, running, wait_until
from tests.kit.fleet import append, cli_config, entries, fleet_prefix, logagent, unique

TTL = 6


def connected_member(pid: int, cluster: EtcdCluster) -> str | None:
    """The endpoint of the member the process holds a connection to (None: none, or several)."""
    ports = {int(e.rsplit(":", 1)[1]): e for e in cluster.endpoints}
    found = {ports[c.raddr.port] for c in psutil.Process(pid).net_connections(kind="tcp")
             if c.raddr and c.raddr.port in ports and c.status == psutil.CONN_ESTABLISHED}
    return found.pop() if len(found) == 1 else None


def test_killing_the_member_the_agent_uses_keeps_its_status_and_config_changes_apply(make_agent, kafka, logdir,
                                                                                      tmp_path):
    with running(EtcdCluster(tmp_path / "cluster"), "a 3-member etcd cluster") as cluster:
        address = ",".join(cluster.endpoints)
        prefix, group, host = fleet_prefix(), unique("web"), unique("h")
        cli = cli_config(tmp_path / "cli.ini", address, prefix, f"{logdir}/**")
        first, second, topic = logdir / "first.log", logdir / "second.log", new_topic("failover")
        first.touch()
        second.write_text("second 0\nsecond 1\n")
        done = logagent("config", "set-collect", "-c", str(cli), "--group", group, "-", stdin=entries((first, topic)))
        assert done.returncode == 0, done.stderr
        agent = make_agent(etcd=address, ip="127.0.21.1", data_dir=tmp_path / "a",
                           extra={"agent": {"id": host, "groups": group},
                                  "fleet": {"prefix": prefix, "status_ttl": str(TTL)}, "etcd": {"timeout": "3"}})
        status_key = f"{prefix}/status/{host}"
        assert agent.proc is not None
        wait_until(lambda: read(cluster.endpoints, status_key) is not None, 10, what="the first status")
        member = wait_until(lambda: connected_member(agent.proc.pid, cluster), 10, what="one member in use")

        # kill -9 the member in use; read from the two left from now on.
        cluster.stop_member(cluster.member_at(member), kill=True)
        killed = time.monotonic()
        left = [e for e in cluster.endpoints if e != member]
        wait_until(lambda: connected_member(agent.proc.pid, cluster) in left, 20, what="the agent on another member")
        moved_after = time.monotonic() - killed

        # A change written to the members left applies, live.
        done = logagent("config", "set-collect", "-c", str(cli_config(tmp_path / "left.ini", ",".join(left), prefix,
                                                                      f"{logdir}/**")),
                        "--group", group, "-", stdin=entries((first, topic), (second, topic)))
        assert done.returncode == 0, done.stderr
        append(first, ["first 0"])
        with KafkaReader(kafka, topic) as reader:
            reader.read(3, timeout=30)
            assert sorted(reader.data()) == ["first 0", "second 0", "second 1"]

        # The status outlives 2 TTLs after the kill: its lease is kept alive through another member, and it
        # reports the change.
        deadline = killed + 2 * TTL + 2
        gaps = 0
        while time.monotonic() < deadline:
            try:
                with connect(EtcdSettings(address=tuple(left), timeout=3)) as kv:
                    gaps += kv.get(status_key)[0] is None  # read, and not there
            except EtcdError:
                pass  # a read that failed (an election under way) says nothing about the key
            time.sleep(0.25)
        doc = json.loads(read(left, status_key) or b"{}")
        assert doc.get("state") == "APPLIED" and str(second) in doc["entries"], doc
        group_key = f"{prefix}/config/groups/{group}/collect_log"
        assert doc["config"]["sources"][group_key] == mod_revision(left, group_key)
        assert gaps == 0, f"the status was missing in {gaps} of the reads after the kill"
        print(f"agent moved to another member {moved_after:.1f} s after the kill")
        cluster.start_member(cluster.member_at(member))
        assert agent.stop() == 0


def read(endpoints: list[str], key: str) -> bytes | None:
    try:
        with connect(EtcdSettings(address=tuple(endpoints), timeout=3)) as kv:
            return kv.get(key)[0]
    except EtcdError:
        return None


def mod_revision(endpoints: list[str], key: str) -> int:
    with connect(EtcdSettings(address=tuple(endpoints), timeout=3)) as kv:
        return kv.read([key]).mod_revisions.get(key, 0)
