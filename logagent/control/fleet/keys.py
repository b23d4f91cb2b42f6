"""The fleet's etcd keys, all under one prefix (`[fleet] prefix`, default /logagent/fleet).

    <prefix>/config/groups/<group>/collect_log      a group's collect list (JSON array, as a host key)
    <prefix>/config/groups/<group>/collect_sysinfo  a group's sysinfo value (JSON object)
    <prefix>/config/hosts/<id>/groups               central group assignment of one host (JSON array)
    <prefix>/config/rollouts/<group>                a staged rollout of a candidate collect list
    <prefix>/status/<id>                            the host's status, under a lease (the agent writes it)
    <prefix>/seen/<id>                              a small lasting record: the host was seen, its last state

Everything an agent reads lies under `<prefix>/config/`, so one prefix watch sees every change of
every group, assignment and rollout; status and seen lie outside it, so a thousand hosts writing
their status never wake each other's watch. Names are checked (config.values.name_problem) before
they become part of a key: no id or group can name a key outside its place.
"""

from __future__ import annotations

from dataclasses import dataclass

from logagent.config.values import name_problem
from logagent.errors import ConfigError

GROUP_COLLECT = "collect_log"
GROUP_SYSINFO = "collect_sysinfo"


def check_name(name: str, what: str) -> str:
    """`name` when it may name a key component; ConfigError (one line) when not."""
    problem = name_problem(name, what)
    if problem is not None:
        raise ConfigError(problem)
    return name


@dataclass(frozen=True)
class KeyKind:
    """What a key under `<prefix>/config/` is: kind is group_collect, group_sysinfo, host_groups or
    rollout; name is the group's (or, for host_groups, the host's)."""

    kind: str
    name: str


@dataclass(frozen=True)
class FleetKeys:
    """Builds and recognises the fleet keys under one prefix."""

    prefix: str = "/logagent/fleet"

    @property
    def config_prefix(self) -> str:
        return f"{self.prefix}/config/"

    @property
    def status_prefix(self) -> str:
        return f"{self.prefix}/status/"

    @property
    def seen_prefix(self) -> str:
        return f"{self.prefix}/seen/"

    @property
    def groups_prefix(self) -> str:
        return f"{self.prefix}/config/groups/"

    def group_collect(self, group: str) -> str:
        return f"{self.groups_prefix}{check_name(group, 'group')}/{GROUP_COLLECT}"

    def group_sysinfo(self, group: str) -> str:
        return f"{self.groups_prefix}{check_name(group, 'group')}/{GROUP_SYSINFO}"

    def host_groups(self, host_id: str) -> str:
        return f"{self.prefix}/config/hosts/{check_name(host_id, 'host id')}/groups"

    def rollout(self, group: str) -> str:
        return f"{self.prefix}/config/rollouts/{check_name(group, 'group')}"

    def status(self, host_id: str) -> str:
        return f"{self.status_prefix}{check_name(host_id, 'host id')}"

    def seen(self, host_id: str) -> str:
        return f"{self.seen_prefix}{check_name(host_id, 'host id')}"

    def classify(self, key: str) -> KeyKind | None:
        """The kind of a key under `<prefix>/config/`; None for any other key (ignored: a
        stray key or a name that is not ours cannot configure anything)."""
        if not key.startswith(self.config_prefix):
            return None
        parts = key[len(self.config_prefix):].split("/")
        if len(parts) == 3 and parts[0] == "groups" and parts[2] in (GROUP_COLLECT, GROUP_SYSINFO):
            kind = "group_collect" if parts[2] == GROUP_COLLECT else "group_sysinfo"
        elif len(parts) == 3 and parts[0] == "hosts" and parts[2] == "groups":
            kind = "host_groups"
        elif len(parts) == 2 and parts[0] == "rollouts":
            kind = "rollout"
        else:
            return None
        if name_problem(parts[1], "name") is not None:
            return None
        return KeyKind(kind, parts[1])

    def id_of(self, key: str, under: str) -> str | None:
        """The host id of a status or seen key (`under` is status_prefix or seen_prefix)."""
        if not key.startswith(under):
            return None
        rest = key[len(under):]
        return rest if name_problem(rest, "host id") is None else None
