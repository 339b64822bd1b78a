"""The version matrix (conformance/matrix.py) counts what failed: a version whose build fails is
a failed cell, a failed scenario shows in bold with its reason, and builds are cached."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from conformance import matrix


def _line(tmp_path: Path, build: Callable[[str, Path], list[str]]) -> matrix.Line:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "harness.txt").write_text("v1")
    return matrix.Line("t", "test line", ["1.0", "2.0"], build, [src])


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matrix, "CACHE", tmp_path / "cache")


def test_a_failed_build_is_a_failed_cell_and_a_good_one_is_cached(tmp_path: Path) -> None:
    calls: list[str] = []

    def build(version: str, cache: Path) -> list[str]:
        calls.append(version)
        if version == "1.0":
            (cache / "build.log").write_text("compile error: no such API\n")
            raise subprocess.CalledProcessError(1, ["mvn"])
        return ["harness", version]

    line = _line(tmp_path, build)
    broken, good = matrix.build(line, "1.0"), matrix.build(line, "2.0")
    assert broken.command is None and "compile error: no such API" in broken.error
    assert good.command == ["harness", "2.0"]
    assert matrix.build(line, "2.0").command == ["harness", "2.0"] and calls == ["1.0", "2.0"]
    (tmp_path / "src" / "harness.txt").write_text("v2")  # a source change rebuilds
    future = (tmp_path / "cache" / "t-2.0" / "built.json").stat().st_mtime + 10
    os.utime(tmp_path / "src" / "harness.txt", (future, future))
    matrix.build(line, "2.0")
    assert calls == ["1.0", "2.0", "2.0"]

    results: list[dict[str, object]] = [
        {"sdk": "t@2.0", "scenario": "a", "passed": True, "unsupported": False, "reason": "ok"},
        {
            "sdk": "t@2.0",
            "scenario": "b",
            "passed": False,
            "unsupported": False,
            "reason": "output 1, expected 2",
        },
    ]
    text = matrix.table([broken, good], results, core=2)
    assert "| test line | 1.0 build failed · 2.0 **1/2** |" in text
    assert "- t@2.0 b: output 1, expected 2" in text
    assert "- t@1.0: build failed" in text


def test_a_full_pass_is_plain_and_the_readme_section_is_replaced(tmp_path: Path) -> None:
    good = matrix.Build(_line(tmp_path, lambda v, c: []), "2.0", "t@2.0", ["h"])
    results: list[dict[str, object]] = [
        {"sdk": "t@2.0", "scenario": s, "passed": True, "unsupported": False, "reason": "ok"} for s in "ab"
    ]
    text = matrix.table([good], results, core=2)
    assert "| test line | 2.0 2/2 |" in text and "Failed:" not in text
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{matrix.README_START}\nold table\n{matrix.README_END}\nrest\n")
    matrix.update_readme(readme, text)
    body = readme.read_text()
    assert "old table" not in body and "| test line | 2.0 2/2 |" in body
    assert body.startswith("intro\n") and body.endswith(f"{matrix.README_END}\nrest\n")
    (tmp_path / "bare.md").write_text("no markers\n")
    with pytest.raises(SystemExit):
        matrix.update_readme(tmp_path / "bare.md", text)
