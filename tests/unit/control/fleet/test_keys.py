"""The fleet key layout: names checked before they become keys, keys recognised by kind."""

from __future__ import annotations

import pytest

from logagent.control.fleet.keys import FleetKeys, KeyKind
from logagent.errors import ConfigError

K = FleetKeys("/logagent/fleet")


def test_layout() -> None:
    assert K.group_collect("web") == "/logagent/fleet/config/groups/web/collect_log"
    assert K.group_sysinfo("web") == "/logagent/fleet/config/groups/web/collect_sysinfo"
    assert K.host_groups("10.0.0.5") == "/logagent/fleet/config/hosts/10.0.0.5/groups"
    assert K.rollout("web") == "/logagent/fleet/config/rollouts/web"
    assert K.status("web-1") == "/logagent/fleet/status/web-1"
    assert K.seen("web-1") == "/logagent/fleet/seen/web-1"
    for key in (K.group_collect("g"), K.group_sysinfo("g"), K.host_groups("h"), K.rollout("g")):
        assert key.startswith(K.config_prefix)
    for key in (K.status("h"), K.seen("h")):
        assert not key.startswith(K.config_prefix)  # status writes never wake a config watch


@pytest.mark.parametrize("name", ["", "a/b", "..", ".", "a\nb", "a b", "fleet", "x" * 129, "-a", "é"])
def test_names_that_could_escape_are_refused(name: str) -> None:
    for build in (K.group_collect, K.rollout, K.status, K.host_groups):
        with pytest.raises(ConfigError):
            build(name)


def test_classify() -> None:
    assert K.classify(K.group_collect("web")) == KeyKind("group_collect", "web")
    assert K.classify(K.group_sysinfo("web")) == KeyKind("group_sysinfo", "web")
    assert K.classify(K.host_groups("h1")) == KeyKind("host_groups", "h1")
    assert K.classify(K.rollout("web")) == KeyKind("rollout", "web")
    for other in ("/logagent/fleet/config/groups/web", "/logagent/fleet/config/groups/web/x",
                  "/logagent/fleet/config/groups/../collect_log", "/logagent/fleet/status/h1",
                  "/logagent/10.0.0.5/collect_log/config", "/logagent/fleet/config/rollouts/a/b"):
        assert K.classify(other) is None
    assert K.id_of(K.status("h1"), K.status_prefix) == "h1"
    assert K.id_of("/logagent/fleet/status/a/b", K.status_prefix) is None
