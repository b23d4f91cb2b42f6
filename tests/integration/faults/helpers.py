"""Helpers of the fault-injection suite: peak RSS and an unprivileged agent that runs from a clone
anywhere. Tallies, Kafka reading and waiting are the test kit's (tests/kit)."""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kit import ROOT, AgentProcess

FLUSH_INTERVAL = 0.5  # registry_flush_interval that tests.kit.write_config sets
RSS_LIMIT_MB = 150.0  # what "bounded" means here: the agent runs at ~40 MiB under load


def peak_rss_mb(agent: AgentProcess) -> float:
    """VmHWM (peak resident set) of the running agent, in MiB; 0 when it is not running."""
    if agent.proc is None or agent.proc.poll() is not None:
        return 0.0
    try:
        for line in Path(f"/proc/{agent.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


class PeakTracker:
    """The highest VmHWM seen across the incarnations of one or more agents."""

    def __init__(self) -> None:
        self.peak = 0.0

    def sample(self, *agents: AgentProcess) -> float:
        for agent in agents:
            self.peak = max(self.peak, peak_rss_mb(agent))
        return self.peak

    def restart(self, agent: AgentProcess) -> None:
        """A clean stop (exit status 0) and a start, the ending incarnation's peak taken first: VmHWM
        is the process's, gone with it."""
        self.sample(agent)
        assert agent.stop() == 0
        agent.start()


def unmount_after(mount: Path, agents: Iterable[AgentProcess]) -> None:
    """Unmount a file system a test mounted, once the test's agents are gone (killed: they hold files
    on it): tried again for 5 s while it is still busy, then detached (umount -l)."""
    for agent in agents:
        agent.kill()
    for _ in range(50):
        if subprocess.run(["umount", str(mount)], capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


# ---------------------------------------------------------------------------- running as nobody
#
# The user nobody must be able to execute an interpreter and read the agent and its dependencies.
# A clone anywhere a user puts it (a `mktemp -d` folder is 0700, root's home is 0700) and a venv
# whose python lives under /root/.pyenv give nobody none of that, and the editable install points
# into the unreadable checkout. So once per session the tests build a runtime nobody can use: a
# world-readable folder under /tmp with a copy of logagent/ and of its installed dependencies
# (hard links where the file system allows, else copies), and an interpreter of the same
# Python version that nobody can run (the system's, else the venv's own, else a copy of it).

SETPRIV = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
_SKIP_TREES = {"site-packages", "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip"}


def nobody_ids() -> tuple[int, int]:
    pw = pwd.getpwnam("nobody")
    return pw.pw_uid, pw.pw_gid


def check_setpriv() -> str:
    """'' when this machine can run a process as nobody, else why not (a limit of the machine,
    not a defect of the agent)."""
    if os.geteuid() != 0:
        return f"the suite runs as uid {os.geteuid()}, not root: only root can start a process as nobody"
    if shutil.which("setpriv") is None:
        return "setpriv is not installed (apt-get install util-linux)"
    try:
        nobody_ids()
    except KeyError:
        return "this machine has no user 'nobody'"
    return ""


@dataclass(frozen=True)
class NobodyRuntime:
    """An interpreter and a PYTHONPATH with which nobody can run `python -m logagent`."""

    python: str
    home: Path  # world-readable: site/ (logagent and its dependencies); the agent's cwd
    env: dict[str, str]

    def command(self, *args: str) -> list[str]:
        return [*SETPRIV, self.python, *args]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), capture_output=True, text=True, cwd=self.home,
                              env=dict(os.environ, **self.env), timeout=60, check=False)


_RUNTIME: list[NobodyRuntime | str] = []  # the session's runtime, or why it could not be made


def _world_traversable(path: Path) -> bool:
    """Every folder from / to path lets others in (o+x)."""
    path = path.resolve()
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in [path, *path.parents])


def _place(src: Path, dst: Path) -> None:
    """dst becomes src for nobody: a hard link when src is world-readable and on the same file
    system (instant, and the agent runs the very same bytes), else a copy made world-readable."""
    mode = src.stat().st_mode
    if mode & stat.S_IROTH:
        try:
            os.link(src, dst)
            return
        except OSError:  # another file system, or links refused (fs.protected_hardlinks)
            pass
    shutil.copy2(src, dst)
    os.chmod(dst, 0o755 if mode & 0o111 else 0o644)


def _place_tree(src: Path, dst: Path, skip: frozenset[str] | set[str] = frozenset()) -> None:
    """src (a file or a folder, recursively, leaving out names in skip) placed at dst."""
    if src.is_symlink() and not os.path.isabs(os.readlink(src)):
        if not dst.is_symlink():
            os.symlink(os.readlink(src), dst)  # libpython3.11.so -> libpython3.11.so.1.0 stays relative
    elif src.is_dir():
        dst.mkdir(mode=0o755, exist_ok=True)
        os.chmod(dst, 0o755)
        for child in src.iterdir():
            if child.name not in skip:
                _place_tree(child, dst / child.name, skip)
    elif src.is_file() and not dst.exists():
        _place(src.resolve(), dst)


def _requirements(dist_name: str) -> list[str]:
    """Names of the distributions dist_name needs at run time (extras left out)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    names = []
    for raw in metadata.distribution(dist_name).requires or []:
        req = Requirement(raw)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            names.append(req.name)
    return names


def _copy_site(site: Path) -> None:
    """logagent/ from this checkout, and the installed files of every distribution it needs."""
    from importlib import metadata

    _place_tree(ROOT / "logagent", site / "logagent", {"__pycache__"})
    seen: set[str] = set()
    todo = _requirements("logagent")
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise RuntimeError(f"{name}, which logagent needs, is not installed in {sys.prefix}") from None
        todo.extend(_requirements(name))
        base = Path(str(dist.locate_file(""))).resolve()
        for top in sorted({f.parts[0] for f in dist.files or [] if f.parts and f.parts[0] != ".."}):
            if top == "__pycache__":
                for f in dist.files or []:
                    if f.parts[0] == "__pycache__":
                        (site / "__pycache__").mkdir(mode=0o755, exist_ok=True)
                        _place_tree(base / f, site / f)
            else:
                _place_tree(base / top, site / top)


def _copy_interpreter(dest: Path) -> tuple[str, dict[str, str]]:
    """A copy of this venv's base interpreter (binary, libpython, standard library) in dest."""
    prefix = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    binary = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    (dest / "bin").mkdir(parents=True, mode=0o755)
    (dest / "lib").mkdir(mode=0o755)
    _place(binary, dest / "bin" / version)
    for lib in (prefix / "lib").glob("libpython*.so*"):
        _place_tree(lib, dest / "lib" / lib.name)
    _place_tree(prefix / "lib" / version, dest / "lib" / version, _SKIP_TREES)
    os.chmod(dest, 0o755)
    return str(dest / "bin" / version), {"LD_LIBRARY_PATH": str(dest / "lib"), "PYTHONHOME": str(dest)}


def _interpreters() -> list[str]:
    """Interpreters of this Python version, the system's first (made for every user to run)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = [f"/usr/bin/{version}", shutil.which(version) or "",
             os.path.realpath(getattr(sys, "_base_executable", sys.executable)), os.path.realpath(sys.executable)]
    return list(dict.fromkeys(p for p in found if p and os.path.isfile(p)))


def _build_runtime() -> NobodyRuntime:
    bases = [Path(tempfile.gettempdir()), Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")]
    base = next((b for b in bases if b.is_dir() and _world_traversable(b)), None)
    if base is None:
        raise RuntimeError(f"none of {', '.join(map(str, bases))} lets other users in")
    home = Path(tempfile.mkdtemp(prefix="logagent-nobody-", dir=base))
    atexit.register(shutil.rmtree, home, True)
    os.chmod(home, 0o755)
    site = home / "site"
    site.mkdir(mode=0o755)
    _copy_site(site)
    env = {"PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(home)}
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    probe = ("import sys, logagent.agent, logagent.control.etcd, logagent.cli.main; "
             "print('%d.%d' % sys.version_info[:2])")
    tried = []
    for python in _interpreters():
        runtime = NobodyRuntime(python, home, env)
        done = runtime.run("-c", probe)
        if done.returncode == 0 and done.stdout.strip() == want:
            return runtime
        tried.append(f"{python}: {(done.stderr.strip().splitlines() or [done.stdout.strip()])[-1][:160]}")
    python, extra = _copy_interpreter(home / "python")
    runtime = NobodyRuntime(python, home, dict(env, **extra))
    done = runtime.run("-c", probe)
    if done.returncode == 0 and done.stdout.strip() == want:
        return runtime
    tried.append(f"a copy in {home / 'python'}: {(done.stderr.strip().splitlines() or ['?'])[-1][:160]}")
    raise RuntimeError("no interpreter runs logagent as nobody: " + "; ".join(tried))


def nobody_runtime() -> NobodyRuntime:
    """The session's runtime for nobody, built at the first call (about a second with hard links).
    Skips the test when the machine cannot run anything as nobody (not root, no setpriv, no such
    user): that is the machine's limit, not the agent's defect. Fails when it can and the runtime
    still cannot be made, with the reason in one line: that is a defect of this kit."""
    why = check_setpriv()
    if why:
        pytest.skip(f"cannot run the agent unprivileged: {why}")
    if not _RUNTIME:
        try:
            _RUNTIME.append(_build_runtime())
        except (RuntimeError, OSError) as exc:
            _RUNTIME.append(str(exc))
    runtime = _RUNTIME[0]
    if isinstance(runtime, str):
        pytest.fail(f"cannot prepare a runtime the user nobody can run: {runtime}", pytrace=False)
    return runtime


class UnprivilegedAgent(AgentProcess):
    """The agent run as nobody:nogroup through setpriv, so file permissions apply to it; from the
    session's NobodyRuntime, so the checkout's own permissions do not matter."""

    def start(self, wait_ready: bool = True, timeout: float = 30.0) -> UnprivilegedAgent:
        runtime = nobody_runtime()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(runtime.command("-m", "logagent", "run", "-c", str(self.config)),
                                         stdout=log, stderr=subprocess.STDOUT, cwd=runtime.home,
                                         env=dict(self.env, **runtime.env))
        if wait_ready:
            self.wait_ready(timeout)
        return self
