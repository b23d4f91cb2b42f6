"""Hostile names and files, end to end through the real broker (issue 14): a symlink swapped in a
loop never ships a file outside allowed_paths, a symlink loop under `**` stops nothing, a name that is
not UTF-8 is collected, a name with control characters forges no line of the agent's log (issue 20
item 5), one file under several names is shipped once, and what lies outside is never named in
/metrics or the log."""

from __future__ import annotations

import ctypes
import json
import os
import threading
import time
from pathlib import Path

import pytest

from devstack.kafkaread import read_topic
from tests.kit import KafkaReader, new_topic, parse_metrics, split_sample, wait_until

AT_FDCWD = -100
RENAME_EXCHANGE = 2
MARKER = "TOP-SECRET-OUTSIDE-0xC0FFEE"


class Swapper:
    """renameat2(RENAME_EXCHANGE) of a regular file and a symlink to an outside file, in a loop: at any
    instant the collected name is one or the other, and each swap is atomic."""

    def __init__(self, a: Path, b: Path) -> None:
        self.a, self.b = os.fsencode(a), os.fsencode(b)
        self.swaps = 0
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="swapper", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._libc.renameat2(AT_FDCWD, self.a, AT_FDCWD, self.b, RENAME_EXCHANGE) != 0:
                raise OSError(ctypes.get_errno(), "renameat2")
            self.swaps += 1
            time.sleep(0.0005)

    def __enter__(self) -> Swapper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_symlink_swap_race_ships_nothing_from_outside(make_agent, kafka, logdir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "shadow"
    secret.write_text("".join(f"{MARKER} {i}\n" for i in range(200)))
    secret.chmod(0o600)
    single, globbed = logdir / "single", logdir / "globbed"
    single.mkdir()
    globbed.mkdir()
    topic = new_topic("swap")
    for folder in (single, globbed):
        (folder / "app.log").write_text("")
        (folder / "evil.log").symlink_to(secret)
    agent = make_agent(files=[{"path": str(single / "app.log"), "topic": topic, "start": "beginning"},
                              {"path": f"{globbed}/*.log", "topic": topic, "start": "beginning"}],
                       extra={"agent": {"stat_interval": "0.1", "scan_interval": "0.2", "rotate_wait": "0.2"}})
    deadline = time.monotonic() + 15
    written = 0
    with Swapper(single / "app.log", single / "evil.log") as s1, \
            Swapper(globbed / "app.log", globbed / "evil.log") as s2:
        while time.monotonic() < deadline:
            for folder in (single, globbed):
                # Whichever name is the regular file now: append through the descriptor it has.
                for name in ("app.log", "evil.log"):
                    path = folder / name
                    if not path.is_symlink():
                        with open(path, "a") as f:
                            f.write(f"inside {written}\n")
                        written += 1
                        break
            time.sleep(0.01)
    assert s1.swaps > 1000 and s2.swaps > 1000, (s1.swaps, s2.swaps)
    assert agent.alive()
    with KafkaReader(kafka, topic) as reader:
        reader.settle(quiet=3.0, timeout=60)
        values = [json.loads(m.value()) for m in reader.messages]
    leaked = [v["data"] for v in values if MARKER in v["data"]]
    assert not leaked, f"{len(leaked)} lines of the outside file were shipped, e.g. {leaked[:2]}"
    assert len(values) > 100, "the inside lines still flow"
    assert "not_allowed" in agent.get("/metrics")[1]
    assert str(secret) not in agent.log_text()
    assert agent.stop() == 0


def test_symlink_loop_under_double_star_stops_nothing(make_agent, kafka, logdir):
    app = logdir / "app"
    app.mkdir()
    (app / "a").symlink_to(".")
    (app / "b").symlink_to(".")
    good = app / "good.log"
    good.write_text("")
    topic = new_topic("loop")
    agent = make_agent(files=[{"path": f"{app}/**/*.log", "topic": topic, "start": "beginning"}])
    with open(good, "a") as f:
        f.write("".join(f"line {i}\n" for i in range(100)))
    got = read_topic(kafka, topic, 100, timeout=30, quiet=2.0)
    assert got == [f"line {i}" for i in range(100)], "each line once, in order"
    started = time.monotonic()
    assert agent.get("/healthz")[0] == 200 and time.monotonic() - started < 2
    started = time.monotonic()
    assert agent.stop(timeout=15) == 0
    assert time.monotonic() - started < 10


def test_a_name_that_is_not_utf8_is_collected_and_the_rest_runs(make_agent, kafka, logdir):
    topic = new_topic("names")
    bad = os.fsdecode(bytes(logdir) + b"/\xff\xfe.log")
    with open(bad, "w") as f:
        f.write("from the odd name\n")
    (logdir / "z-good.log").write_text("from the good one\n")
    agent = make_agent(files=[{"path": f"{logdir}/*.log", "topic": topic, "start": "beginning"}])
    with KafkaReader(kafka, topic) as reader:
        reader.read(2, timeout=30)
        by_data = {v["data"]: v for v in reader.values()}
    assert by_data["from the odd name"]["path"] == f"{logdir}/\\xff\\xfe.log"
    assert by_data["from the good one"]["path"] == f"{logdir}/z-good.log"
    status, body = agent.get("/metrics")
    assert status == 200 and "\\\\xff\\\\xfe.log" in body
    with open(bad, "a") as f:  # and it keeps being tailed
        f.write("later\n")
    with KafkaReader(kafka, topic) as reader:
        reader.read(3, timeout=30)
    assert agent.stop() == 0


FORGED_PREFIX = "2026-12-06 00:00:00,000 CRITICAL logagent.agent:"
# A newline starts a forged record for any reader; U+2028 and NEL for readers that split on them
# (Python's str.splitlines among them); CR and ESC rewrite a terminal line.
FORGING_NAME = (f"x\n{FORGED_PREFIX} FORGED-NL\u2028{FORGED_PREFIX} FORGED-LS\x85{FORGED_PREFIX} FORGED-NEL"
                "\r\x1b[2K.log")
SHOWN_NAME = (f"x\\x0a{FORGED_PREFIX} FORGED-NL\\xe2\\x80\\xa8{FORGED_PREFIX} FORGED-LS\\xc2\\x85{FORGED_PREFIX} "
              "FORGED-NEL\\x0d\\x1b[2K.log")
CONTROLS = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]]


def _log_messages(text: str, fmt: str) -> list[str]:
    """The agent's log as a reader that splits lines on every line break sees it: the text lines,
    or the `message` of each JSON line (a line that is no JSON object is kept as it is: a piece of
    a record cut in two)."""
    out = []
    for line in text.splitlines():
        try:
            doc = json.loads(line) if fmt == "json" else None
        except ValueError:
            doc = None
        out.append(doc["message"] if isinstance(doc, dict) and "message" in doc else line)
    return out


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_name_with_control_characters_forges_no_log_line(make_agent, kafka, logdir, fmt):
    topic = new_topic("forge")
    folder = logdir / "forge"
    folder.mkdir()
    name = f"{folder}/{FORGING_NAME}"
    lines = [f"forged-name line {i}" for i in range(20)]
    with open(name, "w") as f:
        f.write("".join(f"{line}\n" for line in lines))
    agent = make_agent(files=[{"path": f"{folder}/*.log", "topic": topic, "start": "beginning"}],
                       extra={"agent": {"log_format": fmt}})
    with KafkaReader(kafka, topic) as reader:
        reader.read(len(lines), timeout=30)
        reader.settle(quiet=1.0)
        got = [(json.loads(m.value()), m.key()) for m in reader.messages]
    assert [v["data"] for v, _ in got] == lines
    assert all(v["path"] == name and key == f"127.0.0.1:{name}".encode() for v, key in got), got[0]
    status, body = agent.get("/metrics")
    assert status == 200
    labels = [value for key in parse_metrics(body) for value in split_sample(key)[1].values()]
    assert f"{folder}/{SHOWN_NAME}" in labels
    bad = [value for value in labels if any(ch in value for ch in CONTROLS)]
    assert not bad, f"metric labels with control characters: {bad[:2]}"
    os.unlink(name)  # and the name is logged once more, as the tailer follows the deletion
    shown = f"{folder}/{SHOWN_NAME}"
    wait_until(lambda: any(f"finished rotated file {shown}" in m for m in _log_messages(agent.log_text(), fmt)),
               timeout=20, what="the deletion logged with the escaped name")
    assert agent.stop() == 0
    messages = _log_messages(agent.log_text(), fmt)
    assert any(f"tailing {shown} from offset 0" in m for m in messages)
    forged = [m for m in messages if m.startswith(FORGED_PREFIX) or ("FORGED" in m and shown not in m)]
    assert not forged, f"forged log lines: {forged[:3]}"


def test_one_file_under_several_names_is_shipped_once(make_agent, kafka, logdir):
    topic = new_topic("dups")
    d = logdir / "d"
    d.mkdir()
    dup = d / "dup.log"
    dup.write_text("")
    (d / "alias.log").symlink_to(dup)
    agent = make_agent(files=[{"path": str(dup), "topic": topic, "start": "beginning"},
                              {"path": str(d / "alias.log"), "topic": topic, "start": "beginning"},
                              {"path": f"{d}/*.log", "topic": topic, "start": "beginning"}])
    with open(dup, "a") as f:
        f.write("".join(f"once {i}\n" for i in range(50)))
    got = read_topic(kafka, topic, 50, timeout=30, quiet=3.0)
    assert got == [f"once {i}" for i in range(50)]
    wait_until(lambda: "same file as" in agent.log_text(), timeout=10, what="the duplicate named in the log")
    assert agent.stop() == 0


def test_truncated_and_rewritten_at_once_loses_no_first_line(make_agent, kafka, logdir):
    topic = new_topic("trunc")
    log = logdir / "t.log"
    log.write_text("")
    agent = make_agent(files=[{"path": str(log), "topic": topic}])
    with open(log, "a") as f:
        f.write("before\n")
    with KafkaReader(kafka, topic) as reader:
        reader.read(1, timeout=30)
        with open(log, "r+") as f:
            f.truncate(0)
            f.write("after the truncate, longer than before\nsecond\n")
        reader.read(3, timeout=30)
        reader.settle(quiet=1.5)
        got = [(v["data"], v["offset"]) for v in reader.values()]
    assert got == [("before", 0), ("after the truncate, longer than before", 0), ("second", 39)]
    assert agent.stop() == 0


def test_a_symlinked_folder_leading_outside_is_refused_without_naming_it(make_agent, kafka, logdir, tmp_path):
    outside = tmp_path / "elsewhere-private"
    outside.mkdir()
    (outside / "payroll-2026.log").write_text("salary\n")
    (logdir / "link").symlink_to(outside)
    (logdir / "ok.log").write_text("")
    topic = new_topic("outside")
    agent = make_agent(files=[{"path": f"{logdir}/**/*.log", "topic": topic, "start": "beginning"},
                              {"path": str(logdir / "link" / "payroll-2026.log"), "topic": topic}])
    with open(logdir / "ok.log", "a") as f:
        f.write("fine\n")
    with KafkaReader(kafka, topic) as reader:
        reader.read(1, timeout=30)
        reader.settle(quiet=2.0)
        assert [v["data"] for v in reader.values()] == ["fine"]
    wait_until(lambda: "not_allowed" in agent.get("/metrics")[1], timeout=10, what="the refusal counted")
    metrics_text = agent.get("/metrics")[1]
    assert "elsewhere-private" not in metrics_text and "elsewhere-private" not in agent.log_text()
    assert agent.stop() == 0
