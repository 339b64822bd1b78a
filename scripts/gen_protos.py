"""Generate backend/_proto from protos/ with the pinned grpcio-tools.

    python scripts/gen_protos.py           # regenerate in place
    python scripts/gen_protos.py --check   # exit 1 if the checked-in code is stale

protoc emits flat imports (`import orchestration_pb2`) because the .proto files
have no package; they are rewritten to package-relative imports so that the
generated modules live inside `backend._proto`.
"""

from __future__ import annotations

import argparse
import difflib
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "backend" / "_proto"
PINNED_TOOLS = "1.80.0"

_FLAT_IMPORT = re.compile(r"^import (\w+_pb2(?:_grpc)?) as (\w+)$", re.MULTILINE)
_FLAT_FROM = re.compile(r"^import (\w+_pb2)$", re.MULTILINE)
_PYI_FROM = re.compile(r"^import (\w+_pb2) as (\w+)$", re.MULTILINE)


def _fix_imports(text: str) -> str:
    text = _FLAT_IMPORT.sub(r"from . import \1 as \2", text)
    text = _FLAT_FROM.sub(r"from . import \1", text)
    return _PYI_FROM.sub(r"from . import \1 as \2", text)


def generate(dest: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc  # imported late: only this script needs it

    version = getattr(grpc_tools, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("grpcio-tools")
    if version != PINNED_TOOLS:
        sys.exit(f"grpcio-tools {PINNED_TOOLS} is pinned for reproducible output; found {version}")

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.name) for p in PROTOS.glob("*.proto"))
    rc = protoc.main(
        [
            "protoc",
            f"-I{PROTOS}",
            f"-I{include}",
            f"--python_out={dest}",
            f"--pyi_out={dest}",
            f"--grpc_python_out={dest}",
            *files,
        ]
    )
    if rc != 0:
        sys.exit(f"protoc failed with exit code {rc}")
    for path in dest.iterdir():
        if path.suffix in {".py", ".pyi"}:
            path.write_text(_fix_imports(path.read_text()))
    (dest / "__init__.py").write_text('"""Generated from protos/ by scripts/gen_protos.py. Do not edit."""\n')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if regeneration changes anything")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        if not args.check:
            shutil.rmtree(OUT, ignore_errors=True)
            shutil.copytree(fresh, OUT)
            print(f"generated {len(list(OUT.iterdir()))} files in {OUT.relative_to(ROOT)}")
            return 0
        stale = []
        names = {p.name for p in fresh.iterdir()} | {p.name for p in OUT.glob("*") if p.is_file()}
        for name in sorted(names):
            new = fresh / name
            old = OUT / name
            a = old.read_text().splitlines() if old.exists() else []
            b = new.read_text().splitlines() if new.exists() else []
            if a != b:
                stale.append(name)
                sys.stdout.writelines(
                    line + "\n" for line in difflib.unified_diff(a, b, str(old), str(new), n=1)
                )
        if stale:
            print(f"stale generated code: {', '.join(stale)}; run python scripts/gen_protos.py")
            return 1
        print("generated code is up to date")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
