"""Fixtures of the fault-injection suite.

The real stack comes from the session fixtures of tests/integration/conftest.py (`kafka`,
`kafka_server`, `etcd`, `etcd_server`, `make_agent`, ...), shared with the other integration tests.
On top: a `results` collector whose rows are written to tests/integration/faults/RESULTS.md at the end
of a session that ran every scenario (a partial run, by -k, -x or a file name, writes its table to
$TMPDIR/logagent-faults-RESULTS.partial.md instead), and a world-readable scratch
folder for agents that run as nobody.

Needs, besides the stack: root (a tmpfs mount for the full data_dir; setpriv to run
agents as nobody, since root ignores file permissions) and Debian's logrotate
(with CI set, its absence fails the logrotate scenarios; without, they skip).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.faults.helpers import UnprivilegedAgent
from tests.kit import AgentProcess

# The stack's session fixtures (kafka, kafka_server, etcd, etcd_server, make_agent, logdir, agents, ...)
# and the log-tail hook come from tests/integration/conftest.py: one broker per run.

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
SCENARIO_ORDER = ("test_restarts", "test_kafka_faults", "test_etcd_faults", "test_logrotate", "test_data_dir",
                  "test_bad_input")  # the order, for the table
_OUTCOMES: dict[str, str] = {}
_PARTIAL: list[str] = []  # why this run is not the whole suite: its table then goes to a temp file
_COLLECTED: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers",
                            "faults: fault-injection scenario against the real stack (tests/integration/faults)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _is_fault(item):
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.integration)


def _is_fault(item: pytest.Item) -> bool:
    return f"{os.sep}faults{os.sep}" in str(item.fspath)


def pytest_deselected(items: list[pytest.Item]) -> None:
    if any(_is_fault(item) for item in items):
        _PARTIAL.append("some scenarios deselected")


def pytest_collection_finish(session: pytest.Session) -> None:
    _COLLECTED.extend(item.nodeid for item in session.items if _is_fault(item))
    ran = {Path(str(item.fspath)).name for item in session.items if _is_fault(item)}
    every = {p.name for p in RESULTS_PATH.parent.glob("test_*.py")}
    if ran and ran != every:
        _PARTIAL.append(f"only {', '.join(sorted(ran))}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        _OUTCOMES[report.nodeid] = "FAIL" if report.when == "call" else f"ERROR ({report.when})"
    elif report.skipped:
        _OUTCOMES[report.nodeid] = "skipped"
    elif report.when == "call" and report.nodeid not in _OUTCOMES:
        _OUTCOMES[report.nodeid] = "pass"


class Results:
    """Rows of the results table; one per scenario (a test may add several)."""

    COLUMNS = ("Scenario", "Lines written", "Delivered", "Missing", "Duplicated", "Peak RSS (MiB)", "Notes")

    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, object]]] = []
        self.started = time.time()

    def add(self, nodeid: str, scenario: str, written: int | str = "", delivered: int | str = "",
            missing: int | str = "", duplicated: int | str = "", rss_mb: float = 0.0, notes: str = "") -> None:
        self.rows.append((nodeid, {"Scenario": scenario, "Lines written": written, "Delivered": delivered,
                                   "Missing": missing, "Duplicated": duplicated,
                                   "Peak RSS (MiB)": f"{rss_mb:.0f}" if rss_mb else "",
                                   "Notes": notes}))

    def markdown(self) -> str:
        head = ["| " + " | ".join(self.COLUMNS) + " | Result |",
                "|" + "|".join("---" for _ in range(len(self.COLUMNS) + 1)) + "|"]
        body = []
        order = {name: i for i, name in enumerate(SCENARIO_ORDER)}

        def rank(item: tuple[str, dict[str, object]]) -> int:
            module = item[0].split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
            return order.get(module, len(order))

        for nodeid, row in sorted(self.rows, key=rank):
            cells = [str(row[c]).replace("|", "\\|").replace("\n", " ") for c in self.COLUMNS]
            body.append("| " + " | ".join(cells) + f" | {_OUTCOMES.get(nodeid, 'not finished')} |")
        took = time.time() - self.started
        return "\n".join([
            "# Fault-injection results (tests/integration/faults)",
            "",
            (f"Written by the suite at the end of its run on {time.strftime('%Y-%m-%d %H:%M:%S')} "
             f"({took / 60:.1f} min for {len({n for n, _ in self.rows})} scenarios, 2-core machine). "
             "Delivered counts the Kafka messages that carry a written line, duplicates included; "
             "Missing is a line written and never delivered; Duplicated is a line delivered more than once "
             "(extra copies). Peak RSS is the agent's VmHWM, the highest over its restarts. What the numbers mean: "
             "[docs/delivery.md](../../../docs/delivery.md#what-the-fault-injection-results-show)."),
            "",
            *head,
            *body,
            "",
        ])


@pytest.fixture(scope="session")
def _results_session() -> Iterator[Results]:
    results = Results()
    yield results
    finished = [n for n in _COLLECTED if n in _OUTCOMES]
    if len(finished) < len(_COLLECTED):
        _PARTIAL.append(f"stopped after {len(finished)} of {len(_COLLECTED)} scenarios")
    if results.rows:
        # Only a run of the whole suite replaces the table that the docs link to.
        path = RESULTS_PATH if not _PARTIAL else Path(tempfile.gettempdir()) / "logagent-faults-RESULTS.partial.md"
        path.write_text(results.markdown())
        print(f"\nfault-injection results table: {path}" + (f" ({_PARTIAL[0]})" if _PARTIAL else ""))


@pytest.fixture
def results(_results_session: Results, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """results.add(scenario, written, delivered, missing, duplicated, rss_mb, notes) for this test."""
    nodeid = request.node.nodeid

    class Bound:
        def add(self, scenario: str, **kw: object) -> None:
            _results_session.add(nodeid, scenario, **kw)  # type: ignore[arg-type]

        def add_tally(self, scenario: str, t: object, rss_mb: float, notes: str = "") -> None:
            _results_session.add(nodeid, scenario, written=t.written, delivered=t.delivered,  # type: ignore[attr-defined]
                                 missing=len(t.missing), duplicated=t.duplicated,  # type: ignore[attr-defined]
                                 rss_mb=rss_mb, notes=notes)

    return Bound()


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """A scratch folder under /tmp that the user nobody can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="logagent-faults-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_as_nobody(world_tmp: Path, agents: list[AgentProcess]):  # type: ignore[no-untyped-def]
    """start_as_nobody(config) -> a running UnprivilegedAgent (nobody:nogroup) logging to world_tmp;
    the config is made readable for it."""
    def start(config: Path) -> UnprivilegedAgent:
        os.chmod(config, 0o644)
        agent = UnprivilegedAgent(config, world_tmp / "agent.log")
        agents.append(agent)
        return agent.start()

    return start


@contextlib.contextmanager
def shown_logs(*paths: Path) -> Iterator[None]:
    """Logs of a test's own servers, whose tails a failing test shows beside the session's
    (tests/integration/conftest.py's list), for the block."""
    from tests.integration import conftest

    conftest._SERVER_LOGS.extend(paths)
    try:
        yield
    finally:
        for path in paths:
            if path in conftest._SERVER_LOGS:
                conftest._SERVER_LOGS.remove(path)
