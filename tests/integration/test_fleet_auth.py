"""Least privilege with etcd auth on (issue 22): an agent's etcd user, made with the commands
`logagent fleet role` prints, reads the config keys and writes its own status, and nothing else;
the CLI with the admin (root) user writes the config keys."""

from __future__ import annotations

import json

import pytest

from logagent.config.settings import EtcdSettings
from logagent.control.etcd_client import connect
from logagent.errors import EtcdError
from tests.kit import ETCD_ROOT_PASSWORD, KafkaReader, etcdctl, new_topic, wait_until
from tests.kit.fleet import append, cli_config, entries, fleet_prefix, logagent, unique

AGENT_PASSWORD = "agent-s3cret"


def test_an_agent_user_reads_config_and_writes_only_its_status_and_the_admin_writes_config(
        auth_etcd, make_agent, kafka, logdir, tmp_path):
    endpoint = auth_etcd.endpoint
    prefix, web, host = fleet_prefix(), unique("web"), unique("web-1")
    root = f"root:{ETCD_ROOT_PASSWORD}"
    admin = cli_config(tmp_path / "admin.ini", endpoint, prefix, f"{logdir}/**",
                       extra=f"username = root\npassword = {ETCD_ROOT_PASSWORD}\n")
    # The role and user, exactly as `fleet role` prints them (run here as root).
    done = logagent("fleet", "role", "-c", str(admin), "--id", host)
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():
        args = [a.replace('"$ETCD_AGENT_PASSWORD"', AGENT_PASSWORD) for a in line.split()[1:]]
        etcdctl(endpoint, *args, user=root)

    app, topic = logdir / "app.log", new_topic("auth")
    app.touch()
    done = logagent("config", "set-collect", "-c", str(admin), "--group", web, "-", stdin=entries((app, topic)))
    assert done.returncode == 0, done.stderr  # the admin writes a config key
    agent = make_agent(etcd=endpoint, ip="127.0.14.1", data_dir=tmp_path / "a",
                       extra={"agent": {"id": host, "groups": web},
                              "etcd": {"username": f"logagent-{host}", "password": AGENT_PASSWORD},
                              "fleet": {"prefix": prefix}})
    append(app, ["through least privilege"])
    with KafkaReader(kafka, topic) as reader:
        reader.read(1)
        assert reader.data() == ["through least privilege"]
    settings_root = EtcdSettings(address=(endpoint,), username="root", password=ETCD_ROOT_PASSWORD)
    with connect(settings_root) as kv:
        wait_until(lambda: kv.get(f"{prefix}/status/{host}")[0] is not None, 10, what="the agent's status")
        status = json.loads(kv.get(f"{prefix}/status/{host}")[0] or b"{}")
    assert status["state"] == "APPLIED" and "secret" not in json.dumps(status)

    # With the agent's own credentials: its status yes; a config key, another's status, no.
    as_agent = EtcdSettings(address=(endpoint,), username=f"logagent-{host}", password=AGENT_PASSWORD)
    with connect(as_agent) as kv:
        assert kv.get(f"{prefix}/config/groups/{web}/collect_log")[0] is not None  # it reads the config
        for key in (f"{prefix}/config/groups/{web}/collect_log", f"/logagent/{host}/collect_log/config",
                    f"{prefix}/config/hosts/{host}/groups", f"{prefix}/config/rollouts/{web}",
                    f"{prefix}/status/someone-else", f"{prefix}/seen/someone-else"):
            with pytest.raises(EtcdError, match="permission denied"):
                kv.put(key, "[]")
        with pytest.raises(EtcdError, match="permission denied"):
            kv.read([f"{prefix}/status/someone-else"])  # not even read others' status
    agent_cli = cli_config(tmp_path / "agent.ini", endpoint, prefix, f"{logdir}/**",
                           extra=f"username = logagent-{host}\npassword = {AGENT_PASSWORD}\n")
    done = logagent("config", "set-collect", "-c", str(agent_cli), "--group", web, "-", stdin=entries((app, "x")))
    assert done.returncode == 1 and "permission denied" in done.stderr
    assert "cannot write the status" not in agent.log_text()
    assert agent.stop() == 0
    with connect(settings_root) as kv:
        assert json.loads(kv.get(f"{prefix}/seen/{host}")[0] or b"{}")["state"] == "STOPPED"
