"""globs: bounded glob expansion that ends on symlink loops and never lists outside allowed_paths."""

from __future__ import annotations

import os
import time
from pathlib import Path

from logagent.sources.files.globs import AllowedDirs, expand, literal_base


def test_literal_base() -> None:
    assert literal_base("/var/log/app/*.log") == "/var/log/app"
    assert literal_base("/var/log/**/x.log") == "/var/log"
    assert literal_base("/*.log") == "/"


def test_symlink_loops_end_and_each_file_is_listed_once(tmp_path: Path) -> None:
    app = tmp_path / "app"
    (app / "sub").mkdir(parents=True)
    (app / "x.log").write_text("x\n")
    (app / "sub" / "y.log").write_text("y\n")
    (app / "a").symlink_to(".")
    (app / "b").symlink_to(".")
    (app / "sub" / "up").symlink_to("..")
    started = time.monotonic()
    found = expand(f"{app}/**/*.log", AllowedDirs((f"{tmp_path}/**",)))
    assert time.monotonic() - started < 2
    assert found.paths == [f"{app}/sub/y.log", f"{app}/x.log"] and not found.problem


def test_a_symlinked_folder_leading_outside_is_not_listed(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret2.log").write_text("s\n")
    (tmp_path / "in" / "link").symlink_to(outside)
    (tmp_path / "in" / "ok.log").write_text("o\n")
    found = expand(f"{tmp_path}/in/**", AllowedDirs((f"{tmp_path}/in/**",)))
    assert found.paths == [f"{tmp_path}/in/ok.log"]
    assert not any("secret2" in p for p in found.paths)


def test_limits_are_named(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"{i}.log").write_text("")
    found = expand(f"{tmp_path}/*.log", AllowedDirs(("/**",)), max_files=3)
    assert len(found.paths) == 3 and "matches 5 files; only the first 3" in found.problem
    assert found.paths == sorted(found.paths) and found.reason == "too_many_files"
    deep = tmp_path / "d"
    path = deep
    for i in range(6):
        path = path / f"l{i}"
    path.mkdir(parents=True)
    (path / "deep.log").write_text("")
    found = expand(f"{deep}/**/*.log", AllowedDirs(("/**",)), max_depth=3)
    assert found.paths == [] and "deeper than 3" in found.problem
    found = expand(f"{deep}/**/*.log", AllowedDirs(("/**",)), max_dirs=4)
    assert "more than 4 folders" in found.problem


def test_hidden_names_as_glob_does(tmp_path: Path) -> None:
    (tmp_path / ".hidden.log").write_text("")
    (tmp_path / "seen.log").write_text("")
    assert expand(f"{tmp_path}/*.log", AllowedDirs(("/**",))).paths == [f"{tmp_path}/seen.log"]
    assert expand(f"{tmp_path}/.*.log", AllowedDirs(("/**",))).paths == [f"{tmp_path}/.hidden.log"]


def test_a_name_that_is_not_utf8_is_matched(tmp_path: Path) -> None:
    name = os.fsdecode(bytes(tmp_path) + b"/\xff.log")
    with open(name, "w"):
        pass
    assert expand(f"{tmp_path}/*.log", AllowedDirs(("/**",))).paths == [name]
