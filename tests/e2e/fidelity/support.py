"""Build and run the Go programs of tests/e2e/fidelity/go. Imports no SDK and not `backend`."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.e2e import gobuild
from tests.e2e.gobuild import GoRun

GO_MODULE = Path(__file__).resolve().parent / "go"


@dataclass(frozen=True)
class GoPrograms:
    propagation: Path  # history propagation across app IDs (cmd/propagation)
    carryover: Path  # continue-as-new with unprocessed events kept (cmd/carryover)


def build(out: Path) -> GoPrograms:
    built = gobuild.build(GO_MODULE, ["./cmd/propagation", "./cmd/carryover"], out)
    return GoPrograms(propagation=built["propagation"], carryover=built["carryover"])


def run(binary: Path, args: Sequence[str], *, timeout: float = 90) -> GoRun:
    """Run a program to its end; stdout (RESULT lines) and stderr (the SDK's logs) together."""
    # Nothing from the outer environment may point the program elsewhere: its flags say where.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAPR_")}
    done = subprocess.run(
        [str(binary), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    return GoRun(done.returncode, done.stdout, gobuild.results(done.stdout))
