"""Conformance runner: every scenario in every SDK, judged against scenario.json.

    python -m conformance.runner                          # start a server (memory:) and run all
    python -m conformance.runner --store mongodb://...    # the server on MongoDB
    python -m conformance.runner --endpoint main=H:P --endpoint remote=H:P   # any sidecar
    python -m conformance.runner --sdk python --sdk go --scenario hello_chain --json report.json

Prints a scenario x SDK table and writes a JSON report; exits 1 if anything failed.
A harness that prints no result line, or a broken one, fails that scenario.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc

from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_service_pb2 as spb
from backend._proto import orchestrator_service_pb2_grpc as sgrpc

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = HERE / ".build"
APPS = ("main", "remote")


@dataclass
class Sdk:
    name: str
    command: list[str]
    build: list[list[str]]  # commands run once before the first scenario (cwd = repo root)
    built: Path | None = None  # skip the build when this exists


SDKS = {
    "python": Sdk("python", [sys.executable, str(HERE / "python" / "harness.py"), "--sdk", "dapr"], []),
    "python-legacy": Sdk(
        "python-legacy", [sys.executable, str(HERE / "python" / "harness.py"), "--sdk", "legacy"], []
    ),
    "go": Sdk(
        "go",
        [str(BUILD / "go-harness")],
        [["go", "build", "-C", str(HERE / "go"), "-o", str(BUILD / "go-harness"), "."]],
        BUILD / "go-harness",
    ),
    "java": Sdk(
        "java",
        ["java", "-jar", str(HERE / "java" / "target" / "conformance-harness.jar")],
        [["mvn", "-q", "-B", "-f", str(HERE / "java" / "pom.xml"), "package", "-DskipTests"]],
        HERE / "java" / "target" / "conformance-harness.jar",
    ),
}


@dataclass
class Result:
    scenario: str
    sdk: str
    passed: bool
    reason: str
    sdk_version: str = ""
    seconds: float = 0.0


# -- the server under test ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def store_for(store: str, label: str) -> str:
    """Each SDK gets a server of its own, so each needs a database of its own."""
    parts = urlsplit(store)
    if parts.scheme.startswith("mongodb"):
        return urlunsplit((parts.scheme, parts.netloc, f"/conformance_{label}", parts.query, ""))
    if parts.scheme == "sqlite":
        path = Path(parts.path[1:] if parts.path.startswith("/") else parts.path)
        return f"sqlite:///{path.with_name(f'{path.stem}-{label}{path.suffix}')}"
    return store


def start_server(store: str, log: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    apps = {app: f"127.0.0.1:{_free_port()}" for app in APPS}
    cmd = [sys.executable, "-m", "backend", "serve", "--store", store]
    for app, address in apps.items():
        cmd += ["--app", f"{app}={address}"]
    out = log.open("wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; see {log}")
        if log.read_text(errors="replace").count("ready: app=") >= len(apps):
            return proc, apps
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the server did not become ready; see {log}")


# -- judging ---------------------------------------------------------------------------------


def _history_problems(events: list[Any], expect: dict[str, Any]) -> list[str]:
    problems = []
    kinds = [e.WhichOneof("eventType") for e in events]
    for kind, count in expect.get("history", {}).items():
        if kinds.count(kind) != count:
            problems.append(f"history has {kinds.count(kind)} {kind}, expected {count}")
    for kind, router in expect.get("routed", {}).items():
        found = next((e for e in events if e.WhichOneof("eventType") == kind), None)
        got = (found.router.sourceAppID, found.router.targetAppID) if found is not None else None
        if got != (router["sourceAppID"], router["targetAppID"]):
            problems.append(
                f"{kind} router is {got}, expected {(router['sourceAppID'], router['targetAppID'])}"
            )
    if expect.get("timers_fire_on_time"):
        turn_at = None
        for e in events:
            if e.HasField("workflowStarted"):
                turn_at = e.timestamp.ToDatetime()
            elif (
                e.HasField("timerFired")
                and turn_at is not None
                and turn_at < e.timerFired.fireAt.ToDatetime()
            ):
                problems.append(f"timer {e.timerFired.timerId} was delivered at {turn_at}, before its fireAt")
    return problems


def judge(stub: sgrpc.TaskHubSidecarServiceStub, instance_id: str, expect: dict[str, Any]) -> list[str]:
    state = stub.GetInstance(
        spb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=True), timeout=10
    )
    if not state.exists:
        return [f"instance {instance_id} does not exist"]
    ws = state.workflowState
    problems = []
    status = opb.OrchestrationStatus.Name(ws.workflowStatus).removeprefix("ORCHESTRATION_STATUS_")
    if status != expect["status"]:
        problems.append(f"status {status}, expected {expect['status']}")
    if "output" in expect:
        try:
            output = json.loads(ws.output.value) if ws.HasField("output") else None
        except json.JSONDecodeError:
            output = ws.output.value
        if output != expect["output"]:
            problems.append(f"output {output!r}, expected {expect['output']!r}")
    if (
        "failure_message_contains" in expect
        and expect["failure_message_contains"] not in ws.failureDetails.errorMessage
    ):
        problems.append(
            f"failure message {ws.failureDetails.errorMessage!r} lacks {expect['failure_message_contains']!r}"
        )
    history = stub.GetInstanceHistory(
        spb.GetInstanceHistoryRequest(instanceId=instance_id), timeout=10
    ).events
    return problems + _history_problems(list(history), expect)


def run_one(
    sdk: Sdk, scenario: str, scenarios_dir: Path, apps: dict[str, str], run_id: str, timeout: float
) -> Result:
    expect = json.loads((scenarios_dir / scenario / "scenario.json").read_text())["expect"]
    cmd = [*sdk.command, "--scenario", scenario, "--run-id", run_id]
    for app, address in apps.items():
        cmd += ["--app", f"{app}={address}"]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Result(scenario, sdk.name, False, f"harness timed out after {timeout:.0f}s")
    seconds = time.monotonic() - started
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        return Result(
            scenario,
            sdk.name,
            False,
            f"no result line (exit {proc.returncode}): {' | '.join(tail)}",
            seconds=seconds,
        )
    try:
        line = json.loads(lines[-1])
        instances = line["instances"]
        version = str(line.get("sdk", ""))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        return Result(scenario, sdk.name, False, f"broken result line: {err}", seconds=seconds)
    if line.get("scenario") != scenario:
        return Result(
            scenario, sdk.name, False, f"result line is for {line.get('scenario')!r}", version, seconds
        )
    if line.get("error"):
        return Result(scenario, sdk.name, False, f"harness error: {line['error']}", version, seconds)
    with grpc.insecure_channel(apps["main"]) as channel:
        stub = sgrpc.TaskHubSidecarServiceStub(channel)  # type: ignore[no-untyped-call]
        problems = []
        for role, iid in instances.items():
            problems += [f"{role}: {p}" for p in judge(stub, iid, expect[role])]
    return Result(scenario, sdk.name, not problems, "; ".join(problems) or "ok", version, seconds)


# -- reporting -----------------------------------------------------------------------------------


def table(results: list[Result], sdks: list[str], scenarios: list[str]) -> str:
    cell = {(r.scenario, r.sdk): r for r in results}
    versions = {r.sdk: r.sdk_version for r in results if r.sdk_version}
    head = ["scenario", *(versions.get(s, s) for s in sdks)]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sc in scenarios:
        marks = []
        for s in sdks:
            r = cell.get((sc, s))
            marks.append("—" if r is None else ("pass" if r.passed else f"FAIL: {r.reason}"))
        rows.append("| " + " | ".join([sc, *marks]) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sdk", action="append", help=f"one of {', '.join(sorted(SDKS))} or a --harness name; default: all"
    )
    parser.add_argument(
        "--harness",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="add a harness of your own (an SDK under test), e.g. mysdk='node harness.js'",
    )
    parser.add_argument("--scenario", action="append", help="default: every folder in --scenarios-dir")
    parser.add_argument("--scenarios-dir", type=Path, default=HERE / "scenarios")
    parser.add_argument("--store", default="memory:", help="store of the server the runner starts")
    parser.add_argument(
        "--endpoint", action="append", default=[], help="APP=HOST:PORT of a running sidecar (main and remote)"
    )
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--timeout", type=float, default=240.0, help="per scenario, seconds")
    parser.add_argument("--parallel", type=int, default=2, help="SDKs run at the same time")
    args = parser.parse_args(argv)

    for spec in args.harness:
        name, _, command = spec.partition("=")
        SDKS[name] = Sdk(name, shlex.split(command), [])
    sdks = args.sdk or list(SDKS)
    unknown = [s for s in sdks if s not in SDKS]
    if unknown:
        raise SystemExit(f"unknown SDK {', '.join(unknown)}; known: {', '.join(sorted(SDKS))}")
    scenarios = args.scenario or sorted(
        p.name for p in args.scenarios_dir.iterdir() if (p / "scenario.json").exists()
    )
    BUILD.mkdir(exist_ok=True)
    for name in sdks:
        sdk = SDKS[name]
        if sdk.built is not None and sdk.built.exists():
            continue
        for cmd in sdk.build:
            if shutil.which(cmd[0]) is None:
                raise SystemExit(f"{name}: '{cmd[0]}' is not installed")
            print(f"building {name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
            subprocess.run(cmd, cwd=ROOT, check=True, stdout=sys.stderr)  # stdout is the report

    if args.endpoint:
        endpoint = dict(e.split("=", 1) for e in args.endpoint)
        missing = set(APPS) - set(endpoint)
        if missing:
            raise SystemExit(f"--endpoint needs {', '.join(sorted(missing))} too")
        args.parallel = 1  # workers of one app must be interchangeable: one SDK at a time
    stamp = f"c{int(time.time())}{os.getpid() % 1000}"

    def run_sdk(name: str) -> list[Result]:
        # Own server per SDK: two SDKs' workers on one app ID would take each other's work.
        server = None
        if args.endpoint:
            apps = endpoint
        else:
            server, apps = start_server(
                store_for(args.store, f"{stamp}_{name}"), BUILD / f"server-{name}.log"
            )
        out = []
        try:
            for sc in scenarios:
                r = run_one(SDKS[name], sc, args.scenarios_dir, apps, f"{stamp}-{name}", args.timeout)
                print(
                    f"{'pass' if r.passed else 'FAIL'}  {name:14} {sc:20} {r.seconds:6.1f}s  {'' if r.passed else r.reason}",
                    file=sys.stderr,
                    flush=True,
                )
                out.append(r)
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
        return out

    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        results = [r for batch in pool.map(run_sdk, sdks) for r in batch]

    print(table(results, sdks, scenarios))
    failed = [r for r in results if not r.passed]
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed")
    if args.json:
        args.json.write_text(
            json.dumps({"store": args.store, "results": [asdict(r) for r in results]}, indent=2)
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
