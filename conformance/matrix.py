"""The SDK version matrix: the core scenarios over several releases of each SDK line.

    python -m conformance.runner --matrix                        # every line, every version
    python -m conformance.runner --matrix --line go --line python --matrix-table m.md
    python -m conformance.runner --matrix --update-readme        # rewrite README.md's table

Each version gets a harness build of its own, cached under conformance/.build/matrix/<id>/ and
rebuilt only when the harness sources change: a Go module copy with `go mod edit -require` and
`go mod tidy`, a venv from PyPI, a Maven build with `-Ddurabletask.version`, an npm install.
Versions come from the registries (each was tried once, see VERSIONS_NOT_SERVED). The runner
then plays CORE_SCENARIOS with every build (a server each) and this module writes a compact
table: per line, per version, how many core scenarios passed. A version whose build fails is a
failed cell ("build failed"), never a skip.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".build" / "matrix"
README_START = "<!-- sdk-matrix:start (python -m conformance.runner --matrix --update-readme) -->"
README_END = "<!-- sdk-matrix:end -->"


@dataclass
class Line:
    key: str  # --line value
    title: str  # the table's row
    versions: list[str]
    build: Callable[[str, Path], list[str]]  # (version, cache dir) -> the harness command
    sources: list[Path]  # a change here rebuilds every version of the line


def _newest(paths: list[Path]) -> float:
    files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    return max((f.stat().st_mtime for f in files if "node_modules" not in f.parts), default=0.0)


def _run(cmd: list[str], cwd: Path, log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {shlex.join(cmd)}\n")
        out.flush()
        subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=True)


def _copy(src: Path, dst: Path, ignore: tuple[str, ...] = ()) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*ignore))


def _go(folder_for: Callable[[str], str], module: str) -> Callable[[str, Path], list[str]]:
    """A copy of a Go harness module, with `module` required at the version."""

    def build(version: str, cache: Path) -> list[str]:
        binary, src, log = cache / "harness", cache / "src", cache / "build.log"
        _copy(HERE / folder_for(version), src)
        _run(["go", "mod", "edit", f"-require={module}@{version}"], src, log)
        _run(["go", "mod", "tidy"], src, log)
        _run(["go", "build", "-o", str(binary), "."], src, log)
        return [str(binary)]

    return build


def _durabletask_go_folder(version: str) -> str:
    # v0.11 has the previous API generation (CompleteOrchestratorTask, the Orchestration* names):
    # the go-v0.11 harness; v0.12 on compile with the current one.
    return "go-v0.11" if version.startswith("v0.11.") else "go"


def _python(version: str, cache: Path) -> list[str]:
    """A venv with dapr at the version; before 1.19 the workflow API is the separate
    dapr-ext-workflow package of the same version (1.19 ships it in dapr's wheel)."""
    venv, log = cache / "venv", cache / "build.log"
    if venv.exists():
        shutil.rmtree(venv)
    _run([sys.executable, "-m", "venv", str(venv)], cache, log)
    wants = [f"dapr=={version}"]
    if tuple(int(p) for p in version.split(".")[:2]) < (1, 19):
        wants.append(f"dapr-ext-workflow=={version}")
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, *wants], cache, log)
    return [str(venv / "bin" / "python"), str(HERE / "python" / "harness.py"), "--sdk", "dapr"]


def _java(version: str, cache: Path) -> list[str]:
    src, log = cache / "src", cache / "build.log"
    _copy(HERE / "java", src, ignore=("target",))
    mvn = ["mvn", "-q", "-B", "-f", str(src / "pom.xml"), "package", "-DskipTests"]
    _run([*mvn, f"-Ddurabletask.version={version}"], src, log)
    return ["java", "-jar", str(src / "target" / "conformance-harness.jar")]


def _js(version: str, cache: Path) -> list[str]:
    src, log = cache / "src", cache / "build.log"
    _copy(HERE / "js", src, ignore=("node_modules", "package-lock.json"))
    package = json.loads((src / "package.json").read_text())
    package["dependencies"]["@dapr/durabletask-js"] = version
    (src / "package.json").write_text(json.dumps(package, indent=2))
    _run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts"], src, log)
    return ["node", str(src / "harness.mjs"), "--sdk", "durabletask"]


# Versions tried once against the registries (2026-12-01), not listed:
# - not served: durabletask-go v0.11.1, v0.11.2, v0.11.4, v0.11.5, v0.12.0, v0.12.2-v0.12.4,
#   v0.13.0, v0.13.1 (the Go module proxy answers "not available"); io.dapr:durabletask-client
#   1.15.x and 1.16.x do not exist (Maven Central serves 1.5.x, 1.17.0-rc-1, 1.17.0-rc-4, 1.17.1;
#   Dapr's Java SDK 1.15/1.16 used durabletask-client 1.5.x).
# - served, not played: durabletask-client 1.5.10 (the harness is written against 1.17's API:
#   io.dapr.durabletask.orchestration.TaskOrchestrationFactory, versions, isPatched; and 1.5.x
#   leaves grpc-java and Jackson to the application); @dapr/durabletask-js 0.1.0-alpha.2 (a
#   pre-release before 1.0.0: it plays 6 of the 10, failure_details times out).
NOT_PLAYED = "durabletask-client 1.5.x (harness needs the 1.17 API), @dapr/durabletask-js 0.1.0-alpha.2"
NOT_SERVED = (
    "durabletask-go v0.11.1/2/4/5, v0.12.0/2/3/4, v0.13.x; durabletask-client 1.15.x/1.16.x (never published)"
)

LINES = [
    Line(
        "go",
        "durabletask-go (Go)",
        ["v0.11.0", "v0.11.3", "v0.12.1", "v0.14.0"],
        _go(_durabletask_go_folder, "github.com/dapr/durabletask-go"),
        [HERE / "go", HERE / "go-v0.11"],
    ),
    Line(
        "python",
        "dapr + dapr-ext-workflow (Python)",
        ["1.16.3", "1.17.5", "1.18.3", "1.19.0"],
        _python,
        [],  # the venv depends on the version only: the harness runs from conformance/python
    ),
    Line(
        "java",
        "io.dapr:durabletask-client (Java)",
        ["1.17.0-rc-4", "1.17.1"],
        _java,
        [HERE / "java" / "src", HERE / "java" / "pom.xml"],
    ),
    Line(
        "go-dapr",
        "github.com/dapr/go-sdk (Go)",
        ["v1.13.0", "v1.14.0", "v1.15.0"],
        _go(lambda _: "go-dapr", "github.com/dapr/go-sdk"),
        [HERE / "go-dapr"],
    ),
    Line("js", "@dapr/durabletask-js (JS)", ["1.0.0"], _js, [HERE / "js"]),
]


@dataclass
class Build:
    line: Line
    version: str
    name: str  # the harness name in the runner: "<line>@<version>"
    command: list[str] | None  # None: the build failed
    error: str = ""
    seconds: float = 0.0


def build(line: Line, version: str) -> Build:
    """The version's harness, from the cache when its sources did not change since."""
    cache = CACHE / f"{line.key}-{version}"
    stamp = cache / "built.json"
    name = f"{line.key}@{version}"
    if stamp.exists() and stamp.stat().st_mtime >= _newest(line.sources):
        return Build(line, version, name, json.loads(stamp.read_text())["command"])
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "build.log").write_text("")
    stamp.unlink(missing_ok=True)
    started = time.monotonic()
    print(f"matrix: building {name}", file=sys.stderr, flush=True)
    try:
        command = line.build(version, cache)
    except (subprocess.CalledProcessError, OSError) as err:
        tail = (cache / "build.log").read_text(errors="replace").strip().splitlines()[-3:]
        return Build(line, version, name, None, f"{err}: {' | '.join(tail)}", time.monotonic() - started)
    stamp.write_text(json.dumps({"command": command}))
    return Build(line, version, name, command, seconds=time.monotonic() - started)


def table(builds: list[Build], results: list[dict[str, object]], core: int) -> str:
    """One row per SDK line: each version with the core scenarios it passed."""
    by_sdk: dict[str, list[dict[str, object]]] = {}
    for r in results:
        by_sdk.setdefault(str(r["sdk"]), []).append(r)
    rows = [f"| SDK line | versions: core scenarios passed (of {core}) |", "|---|---|"]
    failures = []
    for line in dict.fromkeys(b.line.key for b in builds):
        cells = []
        for b in (b for b in builds if b.line.key == line):
            if b.command is None:
                cells.append(f"{b.version} build failed")
                failures.append(f"- {b.name}: build failed ({b.error[:200]})")
                continue
            rs = by_sdk.get(b.name, [])
            passed = sum(1 for r in rs if r["passed"])
            failed = [
                str(r["scenario"])
                for r in rs
                if not r["passed"] and not r["unsupported"] and not r.get("sdk_bug")
            ]
            na = [str(r["scenario"]) for r in rs if r["unsupported"]]
            mark = (
                f"{b.version} **{passed}/{core}**"
                if failed or passed + len(na) < core
                else f"{b.version} {passed}/{core}"
            )
            cells.append(mark + (f" ({len(na)} n/a)" if na else ""))
            failures += [
                f"- {b.name} {r['scenario']}: {r['reason']}"
                for r in rs
                if not r["passed"] and not r["unsupported"] and not r.get("sdk_bug")
            ]
        rows.append(f"| {builds_title(builds, line)} | {' · '.join(cells)} |")
    rows.append(f"\nNot served by the registries: {NOT_SERVED}. Served, not played: {NOT_PLAYED}.")
    out = "\n".join(rows)
    if failures:
        out += "\n\nFailed:\n" + "\n".join(failures)
    return out


def builds_title(builds: list[Build], key: str) -> str:
    return next(b.line.title for b in builds if b.line.key == key)


def update_readme(readme: Path, text: str) -> None:
    body = readme.read_text()
    start, end = body.find(README_START), body.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"{readme} has no {README_START} ... {README_END} section")
    readme.write_text(body[: start + len(README_START)] + "\n" + text + "\n" + body[end:])


def run(
    lines: list[str] | None,
    scenarios: list[str],
    runner_args: list[str],
    json_out: Path | None,
    table_out: Path | None,
    readme: Path | None,
) -> int:
    from conformance import runner

    chosen = [ln for ln in LINES if lines is None or ln.key in lines]
    unknown = set(lines or ()) - {ln.key for ln in LINES}
    if unknown:
        raise SystemExit(
            f"unknown --line {', '.join(sorted(unknown))}; known: {', '.join(ln.key for ln in LINES)}"
        )
    builds = [build(line, v) for line in chosen for v in line.versions]
    playable = [b for b in builds if b.command is not None]
    report = CACHE / "report.json"
    args = [*runner_args, "--json", str(report)]
    for b in playable:
        assert b.command is not None
        args += ["--harness", f"{b.name}={shlex.join(b.command)}", "--sdk", b.name]
    for sc in scenarios:
        args += ["--scenario", sc]
    results: list[dict[str, object]] = []
    if playable:
        runner.main(args)
        results = json.loads(report.read_text())["results"]
    text = table(builds, results, len(scenarios))
    print("\n" + text)
    if table_out is not None:
        table_out.write_text(text + "\n")
    if readme is not None:
        update_readme(readme, text)
    if json_out is not None:
        json_out.write_text(
            json.dumps(
                {
                    "scenarios": scenarios,
                    "builds": [
                        {
                            "sdk": b.name,
                            "built": b.command is not None,
                            "error": b.error,
                            "build_seconds": b.seconds,
                        }
                        for b in builds
                    ],
                    "results": results,
                },
                indent=2,
            )
        )
    broken = [b for b in builds if b.command is None]
    failed = [r for r in results if not r["passed"] and not r["unsupported"] and not r.get("sdk_bug")]
    return 1 if broken or failed else 0
