"""The sidecar image, built on a machine that reaches no image registry: `make image`.

Four steps, each cached so that a second build costs seconds:

1. A Docker engine. Debian's docker.io and debootstrap are installed with apt-get when
   missing (as root), and `dockerd` is started in the background when none answers
   (overlay2, else vfs; cgroupfs; no bridge and no iptables rules: every container here
   runs with --network host and every build with --network none).
2. A base image made from Debian's packages instead of pulling python:3.11-slim:
   `debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates
   bookworm` from the machine's own Debian mirror, apt's caches, docs, man pages and
   locales removed, `docker import`ed as logagent-base:bookworm-<key>. The key hashes
   everything that went into it, and Docker's image store keeps it between runs.
3. A wheelhouse: every wheel the agent needs, made on the host with pip (which trusts the
   host's certificates), so that `docker build` needs no network at all. The
   dependencies' wheels are keyed on pyproject.toml, the agent's own wheel on the package's
   files; both are cached outside the clone (LOGAGENT_IMAGE_CACHE, default
   ~/.cache/logagent-image), so a fresh clone on the same machine (CI) reuses them.
4. `docker build --network none --build-arg BASE_IMAGE=<base>` from a build context
   streamed as a tar: the files .dockerignore lets through, plus wheelhouse/. Files carry
   fixed times and owners, so unchanged sources reuse Docker's layer cache.

Used as a library by tests/integration/test_image.py, and as a command:

    python -m deploy.docker.image [--tag logagent:0.1.0] [--base python:3.11-slim]
"""

from __future__ import annotations

import argparse
import fcntl
import fnmatch
import hashlib
import io
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from devstack.stack import tail

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"

SUITE = "bookworm"  # its python3 is 3.11, the Python of python:3.11-slim
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_REPO = "logagent-base"
# Removed from the debootstrap tree before import: nothing the agent runs reads them
# (apt's package lists and downloaded .debs alone are ~95 MB).
BASE_PRUNE = ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
              "usr/share/doc/*", "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*",
              "var/log/*.log", "var/log/apt/*")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
IMAGE_PYTHON = (3, 11)
KEEP_CACHED = 3  # wheelhouses of each kind kept in the cache
IMAGE_LABEL = "org.opencontainers.image.title=logagent"  # set by the Dockerfile's stages


class ImageError(RuntimeError):
    """The engine, the base image, the wheelhouse or the build failed; the message says which and why."""


def _run(cmd: list[str], timeout: float, **kw: object) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout,
                              **kw)  # type: ignore[call-overload]
    except subprocess.TimeoutExpired as exc:
        raise ImageError(f"{cmd[0]} {cmd[1] if len(cmd) > 1 else ''}: no answer within {timeout:.0f}s") from exc


def _say(message: str) -> None:
    print(f"image: {message}", file=sys.stderr, flush=True)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# ---------------------------------------------------------------------------- engine

def _sbin(name: str) -> str | None:
    """A tool that may live in /usr/sbin, which a non-login PATH can lack."""
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}")
                                       if os.access(p, os.X_OK)), None)


def ensure_packages() -> None:
    """apt-get install docker.io and debootstrap when their commands are missing (root only)."""
    wanted = {"dockerd": "docker.io", "docker": "docker.io", "debootstrap": "debootstrap"}
    missing = sorted({pkg for cmd, pkg in wanted.items() if _sbin(cmd) is None})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ImageError(f"missing {', '.join(missing)}: apt-get install {' '.join(missing)} (as root)")
    _say(f"installing {' '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        done = _run(cmd, timeout=600, env=env)
        if done.returncode != 0:
            raise ImageError(f"{' '.join(cmd)} failed (exit {done.returncode}): {_tail(done.stderr, 10)}")


def docker_answers(timeout: float = 20) -> bool:
    """True when `docker info` reaches an engine."""
    if shutil.which("docker") is None:
        return False
    try:
        return _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=timeout).returncode == 0
    except ImageError:
        return False


@dataclass
class Engine:
    """A Docker engine that answers; `proc` is set when this process started it.

    Every process that uses an engine through ensure_engine holds a shared lock on
    cache_root()/engine.lock until it stops (alone while it finds or starts the engine: two
    processes never start two); a dockerd started here is written down in
    cache_root()/dockerd.pid. The last user to stop (the one that gets the lock alone) stops that
    dockerd, whichever process started it: two test suites side by side share one engine, and
    the first to end no longer takes it from the other."""

    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    driver: str = ""
    lock: IO[bytes] | None = field(default=None, repr=False)

    @property
    def started_here(self) -> bool:
        return self.proc is not None

    def stop(self, timeout: float = 30) -> None:
        """Let go of the engine; stop the dockerd a test or build started when no other process uses it."""
        lock, self.lock = self.lock, None
        if lock is None:  # not from ensure_engine: a dockerd that did not start in time
            self._stop_proc(timeout)
            return
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another process uses it: the last one stops it
            if self.proc is not None:
                self._stop_proc(timeout)
            elif (pid := _started_dockerd()) is not None:
                _stop_pid(pid, timeout)
            _pid_file().unlink(missing_ok=True)
        finally:
            lock.close()

    def _stop_proc(self, timeout: float) -> None:
        """Stop the dockerd this process started (it stops its containerd too), and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        _stop_pid(self.proc.pid, timeout)
        self.proc.wait()


def _pid_file() -> Path:
    """Where a dockerd started for tests is written down (cache_root() follows LOGAGENT_IMAGE_CACHE)."""
    return cache_root() / "dockerd.pid"


def _started_dockerd() -> int | None:
    """The pid in _pid_file() when it is a dockerd still running; None otherwise."""
    try:
        pid = int(_pid_file().read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == "dockerd" else None


def _stop_pid(pid: int, timeout: float) -> None:
    """SIGTERM a dockerd (this process's or another's); SIGKILL when it still runs after `timeout`."""
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _runs(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _runs(pid):
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _runs(pid: int) -> bool:
    """The process exists and has not exited (an exited child its parent has not reaped yet is a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _hold_engine_lock(exclusive: bool = False) -> IO[bytes]:
    """A hold on cache_root()/engine.lock: shared, or `exclusive` (waits while another process holds it
    alone: finding or starting the engine, or stopping it)."""
    path = cache_root() / "engine.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(path, "ab")
    fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    return lock


def ensure_engine(log_path: Path, timeout: float = 60, keep: bool = False) -> Engine:
    """A Docker engine that answers `docker info`: the running one, else a dockerd started here.

    overlay2 first; when dockerd dies or never answers with it, vfs (slower, works on
    any filesystem). Raises ImageError with dockerd's last log lines when neither starts.
    The engine is held (see Engine) until its stop(); a dockerd started with `keep` (`make image`)
    is not written down, and no stop() of anyone's stops it.
    """
    lock = _hold_engine_lock(exclusive=True)  # one process at a time finds or starts it
    try:
        engine = _answering_engine(log_path, timeout, keep)
    except BaseException:
        lock.close()
        raise
    fcntl.flock(lock, fcntl.LOCK_SH)  # then shared with every other user until stop()
    engine.lock = lock
    return engine


def _answering_engine(log_path: Path, timeout: float, keep: bool) -> Engine:
    if docker_answers():
        return Engine(driver="(already running)")
    ensure_packages()
    dockerd = _sbin("dockerd")
    if dockerd is None:
        raise ImageError("dockerd not found after installing docker.io")
    if os.geteuid() != 0:
        raise ImageError("no Docker engine answers and dockerd must be started as root")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for driver in ("overlay2", "vfs"):
        with open(log_path, "ab") as log:
            log.write(f"--- dockerd --storage-driver {driver}, {time.strftime('%F %T')}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [dockerd, "--storage-driver", driver, "--exec-opt", "native.cgroupdriver=cgroupfs",
                 "--bridge", "none", "--iptables=false", "--ip-forward=false", "--ip-masq=false"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if docker_answers(timeout=5):
                _say(f"started dockerd (pid {proc.pid}, {driver}); its log: {log_path}")
                if not keep:
                    _pid_file().write_text(f"{proc.pid}\n")
                return Engine(proc, log_path, driver)
            time.sleep(0.5)
        Engine(proc).stop()
        errors.append(f"{driver}: {'exited ' + str(proc.returncode) if proc.returncode else 'no answer'}")
    raise ImageError(f"dockerd did not start ({'; '.join(errors)}); last lines of {log_path}:\n{tail(log_path, 25)}")


# ---------------------------------------------------------------------------- base image

def debian_mirror() -> str:
    """The Debian archive this machine's apt uses for the main suite (LOGAGENT_IMAGE_MIRROR wins)."""
    if os.environ.get("LOGAGENT_IMAGE_MIRROR"):
        return os.environ["LOGAGENT_IMAGE_MIRROR"]
    apt = Path("/etc/apt")
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list")),
             *sorted((apt / "sources.list.d").glob("*.sources"))]
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if path.suffix == ".sources":  # deb822: paragraphs of Key: value
            for para in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", para, flags=re.M))
                if ("deb" in fields.get("Types", "").split() and SUITE in fields.get("Suites", "").split()
                        and fields.get("URIs")):
                    return fields["URIs"].split()[0]
        else:
            for line in text.splitlines():
                words = [w for w in re.sub(r"\[.*?\]", "", line.split("#", 1)[0]).split()]
                if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                    return words[1]
    return DEFAULT_MIRROR


def base_tag() -> str:
    """logagent-base:bookworm-<hash of what goes into it> (not the mirror: any mirror serves the same suite)."""
    recipe = f"{SUITE} minbase {','.join(BASE_PACKAGES)} {platform.machine()} prune={','.join(BASE_PRUNE)}"
    return f"{BASE_REPO}:{SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def image_exists(name: str) -> bool:
    return _run(["docker", "image", "inspect", name], timeout=30).returncode == 0


def base_image(workdir: Path | None = None) -> str:
    """The Debian-made base image's tag, made now (1-3 minutes) unless Docker already has it."""
    tag = base_tag()
    if image_exists(tag):
        return tag
    ensure_packages()
    debootstrap = _sbin("debootstrap")
    if debootstrap is None:
        raise ImageError("debootstrap not found after installing it")
    mirror = debian_mirror()
    _say(f"making {tag} with debootstrap from {mirror} (1-3 minutes, once)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="logagent-base-", dir=workdir) as tmp:
        rootfs = Path(tmp) / "rootfs"
        done = _run([debootstrap, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE,
                     str(rootfs), mirror], timeout=900)
        if done.returncode != 0:
            raise ImageError(f"debootstrap failed (exit {done.returncode}): {_tail(done.stdout + done.stderr)}")
        for pattern in BASE_PRUNE:
            for path in rootfs.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            imported = subprocess.run(
                ["docker", "import",
                 "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "--change", 'CMD ["/bin/bash"]', "-", tag],
                stdin=tar.stdout, capture_output=True, text=True, timeout=600, check=False)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise ImageError(f"docker import failed: {_tail(imported.stderr)}")
    _say(f"{tag} made in {time.monotonic() - started:.0f}s")
    return tag


# ---------------------------------------------------------------------------- wheelhouse

def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "logagent-image"
    return Path(os.environ.get("LOGAGENT_IMAGE_CACHE") or default)


def _package_files() -> list[Path]:
    """What the agent's wheel is made of: pyproject.toml, README.md (its long description), logagent/."""
    files = [ROOT / "pyproject.toml", ROOT / "README.md"]
    files += sorted(p for p in (ROOT / "logagent").rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    return files


def _digest(paths: list[Path], salt: str) -> str:
    h = hashlib.sha256(salt.encode())
    for path in paths:
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _source_copy(dest: Path) -> Path:
    """A clean copy of the package's files, so no build/ or egg-info of the work tree leaks into the wheel."""
    for path in _package_files():
        out = dest / path.relative_to(ROOT)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out)
    return dest


def _pip_wheel(args: list[str], into: Path) -> list[Path]:
    cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "-w", str(into), *args]
    done = _run(cmd, timeout=900)
    if done.returncode != 0:
        raise ImageError(f"pip wheel failed (exit {done.returncode}): {_tail(done.stderr)}")
    return sorted(into.glob("*.whl"))


def _prune(kind: str, keep: Path) -> None:
    """Keep the KEEP_CACHED most recently used wheelhouses of a kind (a new one per code change adds up)."""
    dirs = sorted(cache_root().glob(f"{kind}-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [d for d in dirs if d != keep][KEEP_CACHED - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def _publish(staging: Path, final: Path) -> None:
    (staging / ".complete").touch()
    try:
        staging.rename(final)
    except OSError:  # another build made the same one first
        shutil.rmtree(staging, ignore_errors=True)


def wheelhouse() -> list[Path]:
    """Every wheel `pip install logagent` needs, for the image's Python (cached; see the module doc)."""
    if sys.version_info[:2] != IMAGE_PYTHON:
        raise ImageError(f"the wheelhouse is built with this Python ({platform.python_version()}) for the image's "
                         f"{IMAGE_PYTHON[0]}.{IMAGE_PYTHON[1]}: run with a Python {IMAGE_PYTHON[0]}."
                         f"{IMAGE_PYTHON[1]} venv (make setup makes .venv)")
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    tag = f"cp{IMAGE_PYTHON[0]}{IMAGE_PYTHON[1]}-{platform.machine()}"
    deps = root / f"deps-{_digest([ROOT / 'pyproject.toml'], tag)}"
    pkg = root / f"logagent-{_digest(_package_files(), tag)}"
    for have in (deps, pkg):
        if (have / ".complete").exists():
            os.utime(have)
    if (deps / ".complete").exists() and (pkg / ".complete").exists():
        return sorted(deps.glob("*.whl")) + sorted(pkg.glob("*.whl"))
    with tempfile.TemporaryDirectory(prefix="wheels-", dir=root) as tmp:
        src = _source_copy(Path(tmp) / "src")
        if not (deps / ".complete").exists():
            _say(f"pip wheel: the agent and its dependencies into {deps}")
            out = Path(tmp) / "all"
            wheels = _pip_wheel([str(src)], out)
            staging = Path(tmp) / "deps"
            staging.mkdir()
            for whl in wheels:
                if not whl.name.startswith("logagent-"):
                    whl.rename(staging / whl.name)
            _publish(staging, deps)
            _prune("deps", deps)
        if not (pkg / ".complete").exists():
            staging = Path(tmp) / "pkg"
            staging.mkdir()
            _pip_wheel(["--no-deps", str(src)], staging)
            _publish(staging, pkg)
            _prune("logagent", pkg)
    return sorted(deps.glob("*.whl")) + sorted(pkg.glob("*.whl"))


# ---------------------------------------------------------------------------- build

def _dockerignore_rules() -> list[tuple[bool, str]]:
    """(include, pattern) in order, from .dockerignore; the last matching rule wins, as in Docker."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            include = line.startswith("!")
            rules.append((include, line.lstrip("!").rstrip("/").removeprefix("./")))
    return rules


def _allowed(rel: str, rules: list[tuple[bool, str]]) -> bool:
    keep = True
    for include, pattern in rules:
        bare = pattern.removeprefix("**/")
        hit = (fnmatch.fnmatch(rel, pattern) or rel.startswith(pattern + "/")
               or (pattern.startswith("**/") and any(fnmatch.fnmatch(part, bare) for part in rel.split("/"))))
        if hit:
            keep = include
    return keep


def context_files() -> list[str]:
    """Relative paths the build context holds: what .dockerignore lets through, plus the Dockerfile."""
    rules = _dockerignore_rules()
    found = {"Dockerfile", ".dockerignore"}
    for include, pattern in rules:
        if not include or "*" in pattern:
            continue
        path = ROOT / pattern
        candidates: Iterator[Path] = path.rglob("*") if path.is_dir() else iter([path])
        for p in candidates:
            rel = str(p.relative_to(ROOT))
            if p.is_file() and _allowed(rel, rules):
                found.add(rel)
    return sorted(found)


def _add(tar: tarfile.TarFile, name: str, data: bytes, executable: bool) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o755 if executable else 0o644
    info.mtime = 0  # stable: unchanged sources hit Docker's layer cache
    tar.addfile(info, io.BytesIO(data))


def build_context(wheels: list[Path]) -> bytes:
    """The build context as an uncompressed tar: allowed files, plus the wheels under wheelhouse/."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in context_files():
            path = ROOT / rel
            _add(tar, rel, path.read_bytes(), os.access(path, os.X_OK))
        for whl in wheels:
            _add(tar, f"wheelhouse/{whl.name}", whl.read_bytes(), False)
    return buf.getvalue()


@dataclass
class Built:
    tag: str
    seconds: float
    size: int
    log: str = field(repr=False, default="")


def build(tag: str, base: str, wheels: list[Path]) -> Built:
    """`docker build --network none` of the Dockerfile on `base`, installing only from `wheels`."""
    started = time.monotonic()
    context = build_context(wheels)
    cmd = ["docker", "build", "--network", "none", "--build-arg", f"BASE_IMAGE={base}", "-t", tag,
           "-f", "Dockerfile", "-"]
    try:
        done = subprocess.run(cmd, input=context, capture_output=True, timeout=900, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ImageError("docker build: no result within 900s") from exc
    log = (done.stdout + done.stderr).decode(errors="replace")
    if done.returncode != 0:
        raise ImageError(f"docker build failed (exit {done.returncode}):\n{_tail(log, 40)}")
    size = _run(["docker", "image", "inspect", "--format", "{{.Size}}", tag], timeout=30)
    # Each code change leaves the previous build's layers untagged (~80 MB): drop this
    # Dockerfile's own (by its label) after a day, keeping recent ones as the layer cache.
    _run(["docker", "image", "prune", "--force", "--filter", f"label={IMAGE_LABEL}", "--filter", "until=24h"],
         timeout=120)
    return Built(tag, time.monotonic() - started, int(size.stdout.strip() or 0), log)


def make_image(tag: str, base: str | None = None, log_dir: Path | None = None) -> tuple[Engine, Built]:
    """Engine, base (Debian-made unless `base` is given), wheelhouse and build: what `make image` does."""
    engine = ensure_engine((log_dir or cache_root()) / "dockerd.log", keep=True)
    base = base or base_image()
    built = build(tag, base, wheelhouse())
    return engine, built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.docker.image", description=__doc__.split("\n\n")[0])
    from logagent import __version__

    parser.add_argument("--tag", default=f"logagent:{__version__}")
    parser.add_argument("--base", default=None,
                        help="base image to build on (e.g. python:3.11-slim where a registry is reachable); "
                             "default: one made here from Debian's packages")
    args = parser.parse_args(argv)
    try:
        engine, built = make_image(args.tag, args.base)
    except ImageError as exc:
        print(f"image: {exc}", file=sys.stderr)
        return 1
    print(f"{built.tag}: built in {built.seconds:.1f}s, {built.size / 1e6:.0f} MB")
    if engine.started_here:
        print(f"dockerd was started for this build and keeps running (pid {engine.proc.pid}, "  # type: ignore[union-attr]
              f"log {engine.log_path}); stop it with: kill {engine.proc.pid}")  # type: ignore[union-attr]
    return 0


if __name__ == "__main__":
    sys.exit(main())
