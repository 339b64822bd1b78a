"""Builds the Go load generator and the reference sidecar into bench/.build/ (gitignored).

The reference is durabletask-go's own sidecar (its `main` package with the SQLite backend),
compiled from the Go module proxy through the `tool` directive of bench/reference/go.mod:
its source is never copied into this repository. `go build` is incremental, so rebuilding on
every run costs a second or two once the Go build cache is warm.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD = HERE / ".build"
LOADGEN = BUILD / "loadgen"
REFERENCE = BUILD / "reference-sidecar"
REFERENCE_MODULE = "github.com/dapr/durabletask-go"


class BuildError(RuntimeError):
    pass


def _go(args: list[str], cwd: Path) -> None:
    go = shutil.which("go")
    if go is None:
        # Never a skip: a benchmark run (and the smoke test in CI) must fail without Go.
        raise BuildError("`go` is not on PATH: the load generator and the reference sidecar need Go >= 1.26")
    # -buildvcs=false: the working tree's VCS state is irrelevant and may be unreadable.
    cmd = [go, "build", "-buildvcs=false", *args]
    done = subprocess.run(cmd, cwd=cwd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} (in {cwd}) failed:\n{done.stderr}")


def build_loadgen() -> Path:
    BUILD.mkdir(exist_ok=True)
    _go(["-o", str(LOADGEN), "."], HERE / "loadgen")
    return LOADGEN


def build_reference() -> Path:
    BUILD.mkdir(exist_ok=True)
    _go(["-o", str(REFERENCE), REFERENCE_MODULE], HERE / "reference")
    return REFERENCE
