"""Conformance runner: every scenario in every SDK, judged against scenario.json.

    python -m conformance.runner                          # start a server (memory:) and run all
    python -m conformance.runner --store mongodb://...    # the server on MongoDB
    python -m conformance.runner --endpoint main=H:P --endpoint remote=H:P   # any sidecar
    python -m conformance.runner --sdk python --sdk go --scenario hello_chain --json report.json
    python -m conformance.runner --store mongodb://... --server-per-app   # a process per app ID
    python -m conformance.runner --secure --scenario multi_app_activity  # TLS + a token per app

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

from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_service_pb2 as spb
from backend._proto import orchestrator_service_pb2_grpc as sgrpc
from conformance import judges, secure

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = HERE / ".build"
# Every server hosts these app IDs: `main` and `remote` for the per-SDK scenarios, app1..app4
# for the multi-app ML pipeline, whose apps are played by different SDKs (a scenario's "casts").
APPS = ("main", "remote", "app1", "app2", "app3", "app4")
CAST_LEAD = "app1"  # in a cast, the column's SDK plays this app and starts the workflow
SERVE_WAIT = 60.0  # seconds a --serve harness may take to connect its worker
# The payload bound of the servers the runner starts (--max-payload-bytes): 1 MiB, well below
# the SDKs' default 4 MiB gRPC receive size, so `large_payload` meets the server's bound and not
# the transport's (a work item carries a payload several times). The harnesses use the same value.
PAYLOAD_LIMIT = 1024 * 1024
# TLS and tokens (conformance/secure.py): none unless --secure or --tls-ca / token files.
SECURITY = secure.Security()


CORE_SCENARIOS = frozenset(
    {
        "hello_chain",
        "fan_out_fan_in",
        "durable_timer",
        "external_event",
        "event_timeout",
        "activity_retry",
        "child_workflow",
        "failure_details",
        "multi_app_activity",
        "multi_app_child",
    }
)


@dataclass
class Sdk:
    name: str
    command: list[str]
    build: list[list[str]]  # commands run once before the first scenario (in build_dir)
    built: Path | None = None  # skip the build when this is newer than every file in `sources`
    sources: Path | None = None
    only: frozenset[str] | None = None  # the scenarios this harness plays (None: all)
    build_dir: Path = ROOT

    def up_to_date(self) -> bool:
        if self.built is None or not self.built.exists():
            return not self.build
        if self.sources is None:
            return True
        files = [self.sources] if self.sources.is_file() else self.sources.rglob("*")
        newest = max((p.stat().st_mtime for p in files if p.is_file()), default=0.0)
        return newest <= self.built.stat().st_mtime


def _go_harness(name: str, folder: str, only: frozenset[str] | None = None) -> Sdk:
    """A Go module under conformance/, built into .build/<folder>-harness."""
    binary = BUILD / f"{folder}-harness"
    build = [["go", "build", "-C", str(HERE / folder), "-o", str(binary), "."]]
    return Sdk(name, [str(binary)], build, binary, HERE / folder, only=only)


def _venv_harness(name: str, folder: str) -> Sdk:
    """A Python harness whose SDK needs a venv of its own (folder/requirements.txt), made in
    .build/<folder>-venv; a marker file records when it was last installed."""
    venv, reqs = BUILD / f"{folder}-venv", HERE / folder / "requirements.txt"
    marker = venv / "installed"
    build = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "-r", str(reqs)],
        [sys.executable, "-c", "import pathlib, sys; pathlib.Path(sys.argv[1]).touch()", str(marker)],
    ]
    return Sdk(name, [str(venv / "bin" / "python"), str(HERE / folder / "harness.py")], build, marker, reqs)


def _all_but(*names: str) -> frozenset[str]:
    """Every scenario folder except `names` (a column that does not play those yet)."""
    return frozenset(p.parent.name for p in (HERE / "scenarios").glob("*/scenario.json")) - set(names)


def _node_harness(name: str, sdk: str, only: frozenset[str] | None = None) -> Sdk:
    """The Node harness (conformance/js) for one of its SDKs; `npm ci` from its lock file."""
    folder = HERE / "js"
    # Run in the folder, not with --prefix: --prefix also moves npm's global config
    # ({prefix}/etc/npmrc), and with it a machine's registry and CA settings.
    build = [["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"]]
    lock = folder / "node_modules" / ".package-lock.json"
    command = ["node", str(folder / "harness.mjs"), "--sdk", sdk]
    return Sdk(name, command, build, lock, folder / "package-lock.json", only=only, build_dir=folder)


SDKS = {
    "python": Sdk("python", [sys.executable, str(HERE / "python" / "harness.py"), "--sdk", "dapr"], []),
    "python-legacy": Sdk(
        "python-legacy", [sys.executable, str(HERE / "python" / "harness.py"), "--sdk", "legacy"], []
    ),
    "go": _go_harness("go", "go"),
    # The previous Go SDK generation (CompleteOrchestratorTask); it plays the ten core scenarios.
    "go-v0.11": _go_harness("go-v0.11", "go-v0.11", only=CORE_SCENARIOS),
    "java": Sdk(
        "java",
        ["java", "-jar", str(HERE / "java" / "target" / "conformance-harness.jar")],
        [["mvn", "-q", "-B", "-f", str(HERE / "java" / "pom.xml"), "package", "-DskipTests"]],
        HERE / "java" / "target" / "conformance-harness.jar",
        HERE / "java" / "src",
    ),
    # Dapr-level SDKs (issue #13), configured only the way their users configure them.
    "python-ext": _venv_harness("python-ext", "python-ext"),  # dapr-ext-workflow 1.18.3
    "go-dapr": _go_harness("go-dapr", "go-dapr"),  # github.com/dapr/go-sdk v1.15.0
    # @dapr/durabletask-js 1.0.0. event_order is not played: 1.0.0 drops an event raised while
    # its name has an empty waiter list (`if (!taskList && eventName)`, fixed in @dapr/dapr's copy).
    "js": _node_harness("js", "durabletask", only=_all_but("event_order")),
    "js-dapr": _node_harness("js-dapr", "dapr"),  # @dapr/dapr 3.18.0's workflow API
    "java-dapr": Sdk(  # io.dapr:dapr-sdk-workflows 1.17.1
        "java-dapr",
        ["java", "-jar", str(HERE / "java-dapr" / "target" / "conformance-dapr-harness.jar")],
        [["mvn", "-q", "-B", "-f", str(HERE / "java-dapr" / "pom.xml"), "package", "-DskipTests"]],
        HERE / "java-dapr" / "target" / "conformance-dapr-harness.jar",
        HERE / "java-dapr" / "src",
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
    # The SDK has no public API for what the scenario needs: shown as n/a, neither pass nor fail.
    unsupported: bool = False
    note: str = ""  # shown next to a pass (e.g. the full/delta sends of a stateful-history run)
    # The run failed exactly as scenario.json's `sdk_bugs` says this SDK does (a bug in the SDK,
    # named there): shown as "SDK bug", neither pass nor fail; any other problem still fails.
    sdk_bug: bool = False


# -- the server under test ---------------------------------------------------------------


def _free_port() -> int:
    return _free_ports(1)[0]


def _free_ports(n: int) -> list[int]:
    """`n` distinct free ports: held open together while chosen, so that two picks cannot
    return the same port (CI once gave two apps one listener that way)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def store_for(store: str, label: str) -> str:
    """Each SDK gets a server of its own, so each needs a database of its own."""
    parts = urlsplit(store)
    if parts.scheme.startswith("mongodb"):
        return urlunsplit((parts.scheme, parts.netloc, f"/conformance_{label}", parts.query, ""))
    if parts.scheme == "sqlite":
        path = Path(parts.path[1:] if parts.path.startswith("/") else parts.path)
        return f"sqlite:///{path.with_name(f'{path.stem}-{label}{path.suffix}')}"
    return store


def start_server(
    store: str, log: Path, apps: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    if apps is None and SECURITY.tokens:
        # One listener for every app: the token alone tells the server which app is calling.
        shared = f"127.0.0.1:{_free_port()}"
        apps = dict.fromkeys(APPS, shared)
    apps = apps or {app: f"127.0.0.1:{port}" for app, port in zip(APPS, _free_ports(len(APPS)), strict=True)}
    cmd = [sys.executable, "-m", "backend", "serve", "--store", store, *SECURITY.server_args(apps)]
    cmd += ["--max-payload-bytes", str(PAYLOAD_LIMIT)]
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


def start_servers(
    store: str, log_stem: Path, per_app: bool
) -> tuple[list[subprocess.Popen[bytes]], dict[str, str]]:
    """One server for every app ID, or (MongoDB) one server process per app ID on one database:
    the production shape, where cross-app work crosses processes through the store."""
    if not per_app:
        # Not with_suffix: an SDK name may hold dots ("go@v0.11.3", the version matrix).
        proc, apps = start_server(store, log_stem.with_name(f"{log_stem.name}.log"))
        return [proc], apps
    procs: list[subprocess.Popen[bytes]] = []
    apps = {}
    try:
        for app, port in zip(APPS, _free_ports(len(APPS)), strict=True):
            address = f"127.0.0.1:{port}"
            proc, _ = start_server(store, log_stem.with_name(f"{log_stem.name}-{app}.log"), {app: address})
            procs.append(proc)
            apps[app] = address
    except BaseException:
        stop_all(procs)
        raise
    return procs, apps


def stop_all(procs: list[subprocess.Popen[Any]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
    if expect.get("starts_after_schedule"):
        started = next((e for e in events if e.HasField("executionStarted")), None)
        first_turn = next((e for e in events if e.HasField("workflowStarted")), None)
        if started is None or not started.executionStarted.HasField("scheduledStartTimestamp"):
            problems.append("executionStarted carries no scheduledStartTimestamp")
        elif first_turn is None:
            problems.append("the workflow never ran a turn")
        elif (
            first_turn.timestamp.ToDatetime() < started.executionStarted.scheduledStartTimestamp.ToDatetime()
        ):
            problems.append(
                f"the first turn ran at {first_turn.timestamp.ToDatetime()}, before the scheduled "
                f"{started.executionStarted.scheduledStartTimestamp.ToDatetime()}"
            )
    return problems


def _json_value(payload: Any) -> Any:
    try:
        return json.loads(payload.value)
    except json.JSONDecodeError:
        return payload.value


def judge(stub: sgrpc.TaskHubSidecarServiceStub, instance_id: str, expect: dict[str, Any]) -> list[str]:
    state = stub.GetInstance(
        spb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=True), timeout=10
    )
    if not expect.get("exists", True):
        return [f"instance {instance_id} still exists"] if state.exists else []
    if not state.exists:
        return [f"instance {instance_id} does not exist"]
    ws = state.workflowState
    problems = []
    status = opb.OrchestrationStatus.Name(ws.workflowStatus).removeprefix("ORCHESTRATION_STATUS_")
    if status != expect["status"]:
        problems.append(f"status {status}, expected {expect['status']}")
    if "output" in expect:
        output = _json_value(ws.output) if ws.HasField("output") else None
        if output != expect["output"]:
            problems.append(f"output {output!r}, expected {expect['output']!r}")
    if "custom_status" in expect:
        custom = _json_value(ws.customStatus) if ws.HasField("customStatus") else None
        if custom != expect["custom_status"]:
            problems.append(f"custom status {custom!r}, expected {expect['custom_status']!r}")
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
    return (
        problems + _history_problems(list(history), expect) + judges.history_problems(list(history), expect)
    )


def _substitute(value: Any, run_id: str) -> Any:
    """`{run}` in an expected fact stands for the run's instance-ID prefix."""
    if isinstance(value, str):
        return value.replace("{run}", run_id)
    if isinstance(value, list):
        return [_substitute(v, run_id) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, run_id) for k, v in value.items()}
    return value


def fact_problems(expected: dict[str, Any], reported: Any, run_id: str) -> list[str]:
    """Facts only the client side can observe (an SDK call that must be refused, a page
    of IDs), reported by the harness and compared with scenario.json's."""
    if not expected:
        return []
    if not isinstance(reported, dict):
        return ["the harness reported no facts"]
    problems = []
    for name, want in _substitute(expected, run_id).items():
        if name not in reported:
            problems.append(f"fact {name} not reported")
        elif reported[name] != want:
            problems.append(f"fact {name} is {reported[name]!r}, expected {want!r}")
    return problems


def _harness_args(scenario: str, run_id: str, apps: dict[str, str]) -> list[str]:
    args = ["--scenario", scenario, "--run-id", run_id, *SECURITY.harness_args()]
    for app, address in apps.items():
        args += ["--app", f"{app}={address}"]
    return args


def start_serving(
    sdk: Sdk, app: str, scenario: str, run_id: str, apps: dict[str, str], log: Path
) -> subprocess.Popen[str]:
    """A harness in --serve mode hosts one app ID's workers until it is stopped; it prints
    {"serving": APP} once its worker is connected."""
    cmd = [*sdk.command, "--serve", app, *_harness_args(scenario, run_id, apps)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"), text=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + SERVE_WAIT
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("{") and json.loads(line).get("serving") == app:
            return proc
    stop_all([proc])
    raise RuntimeError(f"{sdk.name} did not start serving {app} (see {log})")


def run_one(
    sdk: Sdk,
    scenario: str,
    scenarios_dir: Path,
    apps: dict[str, str],
    run_id: str,
    timeout: float,
    cast: dict[str, str] | None = None,
    server_logs: dict[str, Path] | None = None,
) -> Result:
    spec = json.loads((scenarios_dir / scenario / "scenario.json").read_text())
    expect = spec["expect"]
    sends = spec.get("workflow_sends")
    sends_log = (server_logs or {}).get(sends.get("app", "main")) if sends else None
    if sends and sends_log is None:
        return Result(
            scenario, sdk.name, False, "needs the log of a server the runner started", unsupported=True
        )
    sends_from = judges.log_offset(sends_log)
    cmd = [*sdk.command, *_harness_args(scenario, run_id, apps)]
    helpers: list[subprocess.Popen[str]] = []
    started = time.monotonic()
    try:
        for app, player in (cast or {}).items():
            if app != CAST_LEAD:
                log = BUILD / f"serve-{run_id}-{scenario}-{app}.log"
                helpers.append(start_serving(SDKS[player], app, scenario, run_id, apps, log))
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Result(scenario, sdk.name, False, f"harness timed out after {timeout:.0f}s")
    except RuntimeError as err:
        return Result(scenario, sdk.name, False, str(err))
    finally:
        stop_all(helpers)
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
    if line.get("unsupported"):
        return Result(scenario, sdk.name, False, str(line["unsupported"]), version, seconds, True)
    if line.get("error"):
        return Result(scenario, sdk.name, False, f"harness error: {line['error']}", version, seconds)
    problems = fact_problems(spec.get("facts", {}), line.get("facts"), run_id)
    missing = sorted(set(expect) - set(instances))
    if missing:
        problems.append(f"the harness reported no instance for {', '.join(missing)}")
    for role, iid in instances.items():
        if role not in expect:
            continue
        app = expect[role].get("app", "main")
        with SECURITY.channel(apps[app], app) as channel:
            stub = sgrpc.TaskHubSidecarServiceStub(channel)  # type: ignore[no-untyped-call]
            problems += [f"{role}: {p}" for p in judge(stub, iid, expect[role])]
    note = ""
    if sends and sends_log is not None:
        streams, still_open = judges.streams_of(sends_log, sends_from, sends.get("app", "main"))
        more, note = judges.sends_problems(sends, streams, still_open)
        problems += more
    reason = "; ".join(problems) or "ok"
    bug = judges.known_sdk_bug(spec, sdk.name, problems)
    if bug:
        return Result(scenario, sdk.name, False, reason, version, seconds, note=bug, sdk_bug=True)
    return Result(scenario, sdk.name, not problems, reason, version, seconds, note=note)


# -- reporting -----------------------------------------------------------------------------------


def _mark(r: Result) -> str:
    if r.passed:
        note = CAST_NOTES.get(r.scenario, {}).get(r.sdk) or r.note
        return f"pass ({note})" if note else "pass"
    if r.sdk_bug:
        return f"SDK bug: {r.note}"
    return f"n/a: {r.reason}" if r.unsupported else f"FAIL: {r.reason}"


CAST_NOTES: dict[str, dict[str, str]] = {}  # scenario -> column -> "app1=java, app2=go, ..."


def table(results: list[Result], sdks: list[str], scenarios: list[str]) -> str:
    cell = {(r.scenario, r.sdk): r for r in results}
    versions = {r.sdk: r.sdk_version for r in results if r.sdk_version}
    head = ["scenario", *(versions.get(s, s) for s in sdks)]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sc in scenarios:
        marks = []
        for s in sdks:
            r = cell.get((sc, s))
            marks.append("—" if r is None else _mark(r))
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
    parser.add_argument(
        "--server-per-app",
        action="store_true",
        help="one server process per app ID, all on the --store database (MongoDB)",
    )
    secure.add_arguments(parser)
    matrix_group = parser.add_argument_group("the SDK version matrix (conformance/matrix.py)")
    matrix_group.add_argument(
        "--matrix", action="store_true", help="the core scenarios over several versions of each SDK line"
    )
    matrix_group.add_argument("--line", action="append", help="only this SDK line (go, python, java, ...)")
    matrix_group.add_argument("--matrix-table", type=Path, help="write the matrix's markdown table here")
    matrix_group.add_argument(
        "--update-readme", action="store_true", help="rewrite the matrix table in README.md"
    )
    args = parser.parse_args(argv)
    if args.matrix:
        from conformance import matrix

        return matrix.run(
            args.line,
            args.scenario or sorted(CORE_SCENARIOS),
            ["--store", args.store, "--timeout", str(args.timeout), "--parallel", str(args.parallel)],
            args.json,
            args.matrix_table,
            ROOT / "README.md" if args.update_readme else None,
        )
    global SECURITY
    SECURITY = secure.from_args(args, APPS)

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
    # A cast scenario's apps are played by several SDKs; its column is the SDK that plays app1.
    casts: dict[str, dict[str, dict[str, str]]] = {}
    for sc in scenarios:
        spec = json.loads((args.scenarios_dir / sc / "scenario.json").read_text())
        if "casts" in spec:
            casts[sc] = {col: cast for col, cast in spec["casts"].items() if col in sdks}
            CAST_NOTES[sc] = {
                col: ", ".join(f"{a}={p}" for a, p in c.items()) for col, c in casts[sc].items()
            }
    needed = set(sdks) | {p for per in casts.values() for c in per.values() for p in c.values()}
    if args.server_per_app and not (args.store.startswith("mongodb") or args.endpoint):
        raise SystemExit("--server-per-app needs a shared store: --store mongodb://...")

    BUILD.mkdir(exist_ok=True)
    for name in sorted(needed):
        sdk = SDKS[name]
        if sdk.up_to_date():
            continue
        for cmd in sdk.build:
            if shutil.which(cmd[0]) is None:
                raise SystemExit(f"{name}: '{cmd[0]}' is not installed")
            print(f"building {name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
            # Builds fetch from the registries (go, mvn, npm): one more try after a failure, so
            # a dropped connection is not taken for a broken harness; a second failure is.
            if subprocess.run(cmd, cwd=sdk.build_dir, stdout=sys.stderr).returncode != 0:
                print(f"building {name} failed; trying once more", file=sys.stderr, flush=True)
                subprocess.run(cmd, cwd=sdk.build_dir, check=True, stdout=sys.stderr)  # stdout is the report

    if args.endpoint:
        endpoint = dict(e.split("=", 1) for e in args.endpoint)
        missing = {"main", "remote"} - set(endpoint)
        if missing:
            raise SystemExit(f"--endpoint needs {', '.join(sorted(missing))} too")
        args.parallel = 1  # workers of one app must be interchangeable: one SDK at a time
    stamp = f"c{int(time.time())}{os.getpid() % 1000}"

    def run_sdk(name: str) -> list[Result]:
        # Own server per SDK: two SDKs' workers on one app ID would take each other's work.
        servers: list[subprocess.Popen[bytes]] = []
        logs: dict[str, Path] = {}  # app -> the log of the server serving it (judges.py reads it)
        if args.endpoint:
            apps = endpoint
        else:
            # The run's stamp in the name: two runners at once (a test, a developer) must not
            # share a log file, judges.py reads the streams this run's server logged.
            stem = BUILD / f"server-{stamp}-{name}"
            servers, apps = start_servers(store_for(args.store, f"{stamp}_{name}"), stem, args.server_per_app)
            for app in apps:
                logs[app] = (
                    stem.with_name(f"{stem.name}-{app}.log")
                    if args.server_per_app
                    else stem.with_name(f"{stem.name}.log")
                )
        out = []
        try:
            for sc in scenarios:
                cast = casts.get(sc, {}).get(name) if sc in casts else None
                if sc in casts and cast is None:
                    continue  # no cast led by this SDK
                only = SDKS[name].only
                if only is not None and sc not in only:
                    continue  # not played by this harness: "—" in the table
                absent = sorted(set(cast or {}) - set(apps))
                if absent:
                    r = Result(sc, name, False, f"no endpoint for {', '.join(absent)}", unsupported=True)
                else:
                    r = run_one(
                        SDKS[name],
                        sc,
                        args.scenarios_dir,
                        apps,
                        f"{stamp}-{name.replace('.', '')}",
                        args.timeout,
                        cast,
                        logs,
                    )
                mark = "pass" if r.passed else ("n/a " if r.unsupported else "bug " if r.sdk_bug else "FAIL")
                print(
                    f"{mark}  {name:14} {sc:24} {r.seconds:6.1f}s  {'' if r.passed else r.reason}",
                    file=sys.stderr,
                    flush=True,
                )
                out.append(r)
        finally:
            stop_all(servers)
        return out

    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        results = [r for batch in pool.map(run_sdk, sdks) for r in batch]

    print(table(results, sdks, scenarios))
    failed = [r for r in results if not r.passed and not r.unsupported and not r.sdk_bug]
    na = [r for r in results if r.unsupported or r.sdk_bug]
    print(f"\n{len(results) - len(failed) - len(na)} passed, {len(failed)} failed, {len(na)} skipped")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "store": args.store,
                    "server_per_app": args.server_per_app,
                    "secure": SECURITY.on,
                    "results": [asdict(r) for r in results],
                },
                indent=2,
            )
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
