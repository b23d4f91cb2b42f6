"""Servers a test starts itself (a KafkaServer, an EtcdServer, a KafkaCluster) and the TLS
certificates they serve."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from devstack.stack import StackError, etcd_binary

ETCD_ROOT_PASSWORD = "s3cret-root"

Server = TypeVar("Server")


def start_or_fail(server: Any, what: str) -> None:
    """Start a test server; one that does not start fails the test loudly, in CI and out of it:
    never a skip."""
    import pytest  # here, not at the top: bench/ imports the kit outside pytest

    try:
        server.start()
    except (StackError, OSError) as exc:
        pytest.fail(f"could not start {what}: {exc}", pytrace=False)


@contextlib.contextmanager
def running(server: Server, what: str, stop: Callable[[], object] | None = None) -> Iterator[Server]:
    """The server started (start_or_fail) for the block, and stopped after it, also when it did not
    start; `stop` replaces server.stop()."""
    try:
        start_or_fail(server, what)
        yield server
    finally:
        (stop or server.stop)()
        forget = getattr(server, "forget_ports", None)  # stopped for good: its ports are free again
        if forget is not None:
            forget()


def make_certs(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl
    (installed by `make setup`). Also server.pem: the server's key and certificate in one file,
    as Kafka's PEM keystore reads them."""
    if shutil.which("openssl") is None:
        raise RuntimeError("the TLS tests need the openssl command: apt-get install openssl (make setup does)")
    folder.mkdir(parents=True)

    def ssl(*args: str) -> None:
        done = subprocess.run(["openssl", *args], cwd=folder, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"openssl {args}: {done.stderr}"

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=logagent-test-ca")
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        (folder / f"{name}.ext").write_text(f"subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n")
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    (folder / "server.pem").write_text((folder / "server.key").read_text() + (folder / "server.crt").read_text())
    return {n: folder / n for n in ("ca.crt", "server.crt", "server.key", "server.pem", "client.crt", "client.key")}


def etcdctl(endpoint: str, *args: str, user: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """etcd's own CLI against `endpoint` (as `user`, 'name:password', when given)."""
    binary = Path(etcd_binary()).with_name("etcdctl")
    binary.chmod(0o755)
    auth = [f"--user={user}"] if user else []
    done = subprocess.run([str(binary), f"--endpoints={endpoint}", *auth, *args], capture_output=True, text=True,
                          timeout=30)
    assert not check or done.returncode == 0, f"etcdctl {args}: {done.stdout}{done.stderr}"
    return done


def enable_etcd_auth(endpoint: str) -> None:
    """A root user with ETCD_ROOT_PASSWORD, then auth on: every request needs a user from now on."""
    for args in (["user", "add", "root", f"--new-user-password={ETCD_ROOT_PASSWORD}"],
                 ["user", "grant-role", "root", "root"], ["auth", "enable"]):
        etcdctl(endpoint, *args)
