"""The docs that a test keeps true: the metrics list, the config keys table, the layout tree, the links.

Docs drift when the code changes beside them; each check here fails on the first difference and
names it:
- docs/monitoring.md lists exactly the metrics logagent/runtime/metrics.py defines, with their type and labels;
- the keys table of docs/configuration.md names every config key, and only those, with its default;
  config.ini in the repository sets every key;
- every `logagent_*` metric and `LOGAGENT_*` variable any doc names exists;
- the layout tree of CONTRIBUTING.md names only files that exist, and every module of logagent/,
  devstack/, deploy/ and bench/;
- every relative link of README.md, CONTRIBUTING.md and docs/*.md (and of bench/README.md and the
  results files) leads to a file that exists, and its #anchor to a heading of that file;
- no user-facing doc cites an issue number, and README.md stays a short front door.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
from prometheus_client import Counter, Gauge

from logagent.config.settings import _SCHEMA, PASSTHROUGH, env_name, load
from logagent.runtime import metrics

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
MONITORING = DOCS / "monitoring.md"
CONFIGURATION = DOCS / "configuration.md"
CONTRIBUTING = REPO / "CONTRIBUTING.md"
# The folders whose every module the layout tree must name.
LAYOUT_COMPLETE = ("logagent", "devstack", "deploy", "bench")


def doc_files() -> list[Path]:
    return [REPO / "README.md", CONTRIBUTING, *sorted(DOCS.glob("*.md"))]


def linked_files() -> list[Path]:
    """The docs, and the pages they send readers on to (the benchmark's, the results files)."""
    return [*doc_files(), REPO / "bench" / "README.md", REPO / "bench" / "RESULTS.md",
            REPO / "tests" / "integration" / "faults" / "RESULTS.md"]


def table_rows(text: str, header: list[str]) -> list[list[str]]:
    """The body rows (cells stripped) of every markdown table whose header row is `header`."""
    rows: list[list[str]] = []
    inside = False
    for line in text.splitlines():
        if not line.startswith("|"):
            inside = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells == header:
            inside = True
        elif inside and not set("".join(cells)) <= set("-: "):
            rows.append(cells)
    return rows


def ticked(cell: str) -> list[str]:
    """The `code` spans of a table cell."""
    return re.findall(r"`([^`]+)`", cell)


# ---------------------------------------------------------------------------- metrics

def defined_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """{name as scraped: (type, label names)} of every metric in logagent/runtime/metrics.py."""
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for obj in vars(metrics).values():
        if isinstance(obj, Counter):
            out[obj._name + "_total"] = ("counter", tuple(obj._labelnames))
        elif isinstance(obj, Gauge):
            out[obj._name] = ("gauge", tuple(obj._labelnames))
    return out


def documented_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """{name: (type, label names)} from the metric tables of docs/monitoring.md; a name twice fails."""
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for name_cell, kind, labels, _ in table_rows(MONITORING.read_text(), ["metric", "type", "labels", "meaning"]):
        [name] = ticked(name_cell)
        assert name not in out, f"docs/monitoring.md lists {name} twice"
        out[name] = (kind, tuple(label.strip() for label in labels.split(",") if label.strip()))
    return out


def test_monitoring_lists_exactly_the_defined_metrics() -> None:
    defined, documented = defined_metrics(), documented_metrics()
    assert len(defined) >= 30, "the metrics of logagent/runtime/metrics.py were not found"
    missing = sorted(set(defined) - set(documented))
    assert not missing, f"defined in logagent/runtime/metrics.py, missing from docs/monitoring.md: {missing}"
    stale = sorted(set(documented) - set(defined))
    assert not stale, f"listed in docs/monitoring.md, not defined in logagent/runtime/metrics.py: {stale}"
    wrong = {name: (documented[name], defined[name]) for name in defined if documented[name] != defined[name]}
    assert not wrong, f"type or labels differ, (documented, defined): {wrong}"


def test_docs_name_only_real_metrics_and_variables() -> None:
    """Every logagent_* metric and LOGAGENT_* variable named anywhere in the docs exists."""
    names = set(defined_metrics())
    known = {env_name(section, key) for section, keys in _SCHEMA.items() for key in keys}
    passthrough = env_name(PASSTHROUGH, "")
    for path in doc_files():
        text = path.read_text()
        for metric in sorted(set(re.findall(r"\blogagent_[a-z_]+[a-z]\b", text))):
            assert metric in names, f"{path.relative_to(REPO)} names metric {metric}, which metrics.py does not define"
        for var in sorted(set(re.findall(r"\bLOGAGENT_[A-Z0-9_]+[A-Z0-9]\b", text))):
            if var.startswith(("LOGAGENT_TEST_", passthrough)):
                continue
            assert var in known, f"{path.relative_to(REPO)} names {var}, which is no config key's variable"


# ---------------------------------------------------------------------------- config keys

def documented_keys() -> dict[tuple[str, str], str]:
    """{(section, key): documented default} from the keys table of docs/configuration.md. A row
    with an empty section continues the one above; a default is one `value`, or the word empty."""
    out: dict[tuple[str, str], str] = {}
    section = ""
    for section_cell, key_cell, default_cell, _ in table_rows(
            CONFIGURATION.read_text(), ["section", "key", "default", "meaning"]):
        if section_cell:
            [name] = ticked(section_cell)
            section = name.strip("[]")
        if section == PASSTHROUGH:
            continue
        if default_cell == "empty":
            default = ""
        else:
            [default] = ticked(default_cell)
        for key in ticked(key_cell):
            assert (section, key) not in out, f"docs/configuration.md lists [{section}] {key} twice"
            out[section, key] = default
    return out


def test_configuration_table_matches_the_settings() -> None:
    documented = documented_keys()
    schema = {(section, key) for section, keys in _SCHEMA.items() for key in keys}
    missing = sorted(schema - set(documented))
    assert not missing, f"config keys missing from the table of docs/configuration.md: {missing}"
    stale = sorted(set(documented) - schema)
    assert not stale, f"docs/configuration.md documents keys the settings do not have: {stale}"
    # Every documented default, given as the key's value, yields the settings of an empty config.
    for (section, key), default in documented.items():
        as_given = load(None, environ={env_name(section, key): default})
        assert as_given == load(None, environ={}), \
            f"docs/configuration.md: [{section}] {key} = {default!r} is not its default"


def test_shipped_config_ini_sets_every_key() -> None:
    """config.ini in the repository lists every key with a comment (docs/configuration.md says so)."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    parser.optionxform = str  # keys as written
    parser.read(REPO / "config.ini")
    missing = sorted(f"[{section}] {key}" for section, keys in _SCHEMA.items() for key in keys
                     if not parser.has_option(section, key))
    assert not missing, f"config.ini does not set {missing}"


# ---------------------------------------------------------------------------- layout

def layout_paths() -> list[str]:
    """The paths of the tree under '## Layout' in CONTRIBUTING.md: two spaces of indent per level."""
    text = CONTRIBUTING.read_text()
    block = re.search(r"^## Layout\n.*?^```\n(.*?)^```", text, re.S | re.M)
    assert block, "CONTRIBUTING.md has no layout tree under '## Layout'"
    paths: list[str] = []
    parents: list[str] = []
    for line in block.group(1).splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0, f"CONTRIBUTING.md layout: odd indent in {line!r}"
        depth = indent // 2
        assert depth <= len(parents), f"CONTRIBUTING.md layout: {line!r} is indented under no folder"
        name = line.split()[0]
        del parents[depth:]
        path = "".join(parents) + name
        paths.append(path.rstrip("/"))
        if name.endswith("/"):
            parents.append(name)
    return paths


def test_contributing_layout_is_the_tree() -> None:
    listed = layout_paths()
    absent = [p for p in listed if not (REPO / p).exists()]
    assert not absent, f"CONTRIBUTING.md's layout names what does not exist: {absent}"
    assert len(listed) == len(set(listed)), "CONTRIBUTING.md's layout names a path twice"
    modules = {str(p.relative_to(REPO)) for top in LAYOUT_COMPLETE for p in (REPO / top).rglob("*.py")
               if p.name != "__init__.py" and "__pycache__" not in p.parts}
    folders = {str(p.parent.relative_to(REPO)) for p in (REPO / "logagent").rglob("*.py")}
    unlisted = sorted((modules | folders) - set(listed))
    assert not unlisted, f"CONTRIBUTING.md's layout misses {unlisted}"


# ---------------------------------------------------------------------------- links

def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    out: set[str] = set()
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        base = slug(heading)
        name, n = base, 0
        while name in out:  # GitHub numbers repeated headings
            n += 1
            name = f"{base}-{n}"
        out.add(name)
    return out


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)  # code blocks hold no links
    text = re.sub(r"`[^`\n]*`", "", text)
    return [target for target in re.findall(r"\]\(([^)\s]+)\)", text)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]  # https:, mailto: ...


@pytest.mark.parametrize("doc", linked_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_lead_to_files(doc: Path) -> None:
    links = relative_links(doc)
    broken: list[str] = []
    for link in links:
        target, _, anchor = link.partition("#")
        dest = (doc.parent / target).resolve() if target else doc
        if not dest.exists():
            broken.append(f"{link} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{link} (no such heading in {dest.relative_to(REPO)})")
    assert not broken, f"{doc.relative_to(REPO)}: broken links {broken}"


def test_docs_cite_no_issue_numbers() -> None:
    """User-facing docs speak of behaviour, not of the tracker's history."""
    for path in doc_files():
        found = re.findall(r"\bissues? \d+", path.read_text(), re.I)
        assert not found, f"{path.relative_to(REPO)} cites {found}"


def test_readme_is_a_front_door() -> None:
    """The README: the two commands, links to the rest, and short (the rest lives in docs/)."""
    readme = (REPO / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert "docs/README.md" in readme and "CONTRIBUTING.md" in readme
    assert len(readme.splitlines()) < 200, "README.md is the front door: move details to docs/"
