"""Go programs of the e2e suites (tests/e2e/security/go, tests/e2e/fidelity/go): one `go build` of
a module's programs per session, and the RESULT lines they print.

Imports no SDK, no grpc and not `backend`, like harness.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULT_PREFIX = "RESULT "


class BuildError(RuntimeError):
    pass


def build(module: Path, packages: Sequence[str], out: Path) -> dict[str, Path]:
    """`go build` the module's `packages` (./cmd/NAME) into `out`; the binaries by NAME.

    The caller turns a BuildError into a test failure, never a skip: without Go these SDKs would
    not be tested at all, and that must fail the run.
    """
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            f"`go` is not on PATH: the Go SDK programs in {module} need it (the version in its go.mod)"
        )
    cmd = [go, "build", "-buildvcs=false", "-o", f"{out}{os.sep}", *packages]
    # A cold module cache downloads the SDKs here: minutes, not seconds.
    done = subprocess.run(cmd, cwd=module, capture_output=True, text=True, timeout=840, check=False)
    if done.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} (in {module}) failed:\n{done.stderr}")
    return {Path(p).name: out / Path(p).name for p in packages}


def results(text: str) -> list[dict[str, Any]]:
    """The JSON objects a program printed as `RESULT {...}` lines, in order (other lines are the
    SDKs' logs)."""
    return [
        json.loads(line[len(RESULT_PREFIX) :]) for line in text.splitlines() if line.startswith(RESULT_PREFIX)
    ]


@dataclass
class GoRun:
    """One finished run of a Go program: its exit code, its output, its RESULT lines."""

    returncode: int
    output: str
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last(self) -> dict[str, Any]:
        assert self.results, f"the program printed no RESULT line (exit {self.returncode}):\n{self.output}"
        return self.results[-1]

    def describe(self) -> str:
        return f"exit {self.returncode}, output:\n{self.output[-6000:]}"
