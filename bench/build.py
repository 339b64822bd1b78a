"""Builds the Go load generator, the reference sidecar and daprd into bench/.build/ (gitignored).

The reference is durabletask-go's own sidecar (its `main` package with the SQLite backend),
compiled from the Go module proxy through the `tool` directive of bench/reference/go.mod:
its source is never copied into this repository. `go build` is incremental, so rebuilding on
every run costs a second or two once the Go build cache is warm.

daprd, placement and scheduler (the Dapr runtime, targets daprd-sqlite and daprd-mongo) are
built the same way from bench/daprd/go.mod, which names github.com/dapr/dapr as a tool and
carries the replace directives dapr needs as a dependency. The first build takes about 5
minutes and some GB of module cache, so the binaries are kept per dapr version in
bench/.build/dapr-VERSION/ and not rebuilt while they are there.
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
DAPR_MODULE = "github.com/dapr/dapr"
DAPR_TOOLS = ("daprd", "placement", "scheduler")


class BuildError(RuntimeError):
    pass


def _go(args: list[str], cwd: Path, tags: str = "") -> None:
    go = shutil.which("go")
    if go is None:
        # Never a skip: a benchmark run (and the smoke test in CI) must fail without Go.
        raise BuildError("`go` is not on PATH: the load generator and the reference sidecar need Go >= 1.26")
    # -buildvcs=false: the working tree's VCS state is irrelevant and may be unreadable.
    cmd = [go, "build", "-buildvcs=false", *(["-tags", tags] if tags else []), *args]
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


def module_version(module_dir: Path, module: str) -> str:
    """The version go.mod requires of `module` ("github.com/dapr/dapr v1.18.1 // indirect")."""
    for line in (module_dir / "go.mod").read_text().splitlines():
        parts = line.split()
        if len(parts) > 1 and parts[0] == module:
            return parts[1]
    raise BuildError(f"{module_dir / 'go.mod'} does not require {module}")


def dapr_version() -> str:
    return module_version(HERE / "daprd", DAPR_MODULE)


def build_dapr() -> dict[str, Path]:
    """daprd, placement and scheduler of the version bench/daprd/go.mod names, built once."""
    out = BUILD / f"dapr-{dapr_version()}"
    out.mkdir(parents=True, exist_ok=True)
    binaries = {name: out / name for name in DAPR_TOOLS}
    for name, path in binaries.items():
        if not path.exists():
            # daprd panics at start without a components build tag.
            print(
                f"[bench] building {name} (the first dapr build takes minutes)", file=sys.stderr, flush=True
            )
            _go(["-o", str(path), f"{DAPR_MODULE}/cmd/{name}"], HERE / "daprd", tags="stablecomponents")
    return binaries
