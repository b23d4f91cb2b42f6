"""A canary with a fake etcd and a fake agent: it applies the candidate, bakes, and on a failed check
goes back to the group's list by itself; an abort takes every host back."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from logagent.config.settings import AgentSettings
from logagent.control.base import EntryHealth, Health
from logagent.control.etcd import EtcdControl
from logagent.control.fleet.keys import FleetKeys
from logagent.control.fleet.rollout import chosen
from logagent.runtime.backoff import Backoff
from tests.kit import RecordingAgent, eventually
from tests.unit.control.test_etcd import FakeEtcd, make_settings

K = FleetKeys()


class SeeingAgent(RecordingAgent):
    """Finds a file for every applied path in `present`; can fail its topic check."""

    def __init__(self, present: set[str]) -> None:
        super().__init__()
        self.present = present
        self.bad_topics: set[str] = set()

    def entry_health(self, behind: bool = False) -> dict[str, EntryHealth]:
        return {p: EntryHealth(files=1 if p in self.present else 0) for p in self.paths}

    def health(self) -> Health:
        return Health(kafka_reachable=True)

    async def topic_problem(self, topic: str) -> str | None:
        return f"topic {topic}: refused" if topic in self.bad_topics else None


def rollout(rid: str, *paths: str, state: str = "running", topic: str = "t") -> bytes:
    return json.dumps({"id": rid, "group": "web", "state": state, "percent": 100, "bake": 0.2,
                       "candidate": [{"path": p, "topic": topic} for p in paths]}).encode()


def control_for(etcd: FakeEtcd, tmp_path: Path, agent: SeeingAgent) -> EtcdControl:
    settings = make_settings(tmp_path)
    settings = replace(settings, agent=replace(settings.agent, groups=("web",)))
    assert isinstance(settings.agent, AgentSettings)
    return EtcdControl(settings, agent, etcd.connect, Backoff(first=0.02, cap=0.05), observer=agent)


async def test_a_failing_canary_reverts_by_itself_and_an_abort_ends_the_rollout(tmp_path: Path) -> None:
    etcd = FakeEtcd()
    etcd.values[K.group_collect("web")] = b'[{"path": "/var/log/a.log", "topic": "t"}]'
    agent = SeeingAgent({"/var/log/a.log"})
    control = control_for(etcd, tmp_path, agent)
    await control.start()
    assert agent.paths == ["/var/log/a.log"]
    assert chosen("10.0.0.5", "r-bad", 100)
    etcd.put(K.rollout("web"), rollout("r-bad", "/var/log/typo.log"))
    await eventually(lambda: control.fleet.rollout_states.get("web", {}).get("state") == "FAILED")
    assert agent.applied_paths[-2:] == [["/var/log/typo.log"], ["/var/log/a.log"]]  # applied, then reverted
    assert "/var/log/typo.log: the new entry found no file" in control.fleet.rollout_states["web"]["why"]
    assert control.fleet.inputs().state == "FAILED"
    saved = tmp_path / "data" / "etcd-config.json"  # written in a thread, after the state changed
    await eventually(lambda: saved.exists() and "r-bad" in json.loads(saved.read_text()).get("failed_rollouts", {}),
                     what="the failed rollout saved: a restart does not try it again")
    etcd.put(K.rollout("web"), rollout("r-bad", "/var/log/typo.log", state="aborted"))
    await eventually(lambda: "web" not in control.fleet.rollout_states)
    assert control.fleet.inputs().state == "APPLIED" and agent.paths == ["/var/log/a.log"]

    agent.present.add("/var/log/b.log")
    etcd.put(K.rollout("web"), rollout("r-good", "/var/log/a.log", "/var/log/b.log"))
    await eventually(lambda: control.fleet.rollout_states.get("web", {}).get("state") == "PASSED")
    assert agent.paths == ["/var/log/a.log", "/var/log/b.log"]

    agent.bad_topics.add("nope")
    etcd.put(K.rollout("web"), rollout("r-topic", "/var/log/a.log", topic="nope"))
    await eventually(lambda: control.fleet.rollout_states.get("web", {}).get("state") == "FAILED")
    assert "topic check: topic nope: refused" in control.fleet.rollout_states["web"]["why"]
    assert [e.topic for e in agent.collect[-1]] == ["t"]  # the group's list again

    # A candidate with an entry this host refuses is never applied.
    applied = len(agent.collect)
    etcd.put(K.rollout("web"), rollout("r-refused", "/etc/shadow"))
    await eventually(lambda: control.fleet.rollout_states.get("web", {}).get("id") == "r-refused")
    assert control.fleet.rollout_states["web"]["state"] == "FAILED" and len(agent.collect) == applied
    await control.stop()
