"""One run of one workload: the load generator as a subprocess against a running server.

The load generator prints JSON lines on stdout: for `events` first {"phase": "waiting"} once
every instance is parked on its event (we read the server's memory then and answer with a
line on stdin), and always one result line last. A run with no result line, a non-zero exit
or a server that died is a failed run, described in the record's `errors`.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from bench import mongostats
from bench.memory import cpu_seconds, rss_kb
from bench.targets import ROOT, Server

KILL_GRACE = 60.0  # seconds past the load generator's own timeout before we kill it


def command(
    driver: str,
    loadgen: Path | None,
    endpoints: dict[str, str],
    workload: str,
    count: int,
    concurrency: int,
    timeout: float,
    extra: list[str],  # the server's client_args: TLS and token files
) -> list[str]:
    run_id = f"{workload}-{uuid.uuid4().hex[:10]}"  # unique across repeats on one server
    if driver == "go":
        assert loadgen is not None
        cmd = [str(loadgen), "--timeout", f"{timeout:.0f}s"]
    else:
        cmd = [sys.executable, "-m", "bench.pyloadgen", "--timeout", str(timeout)]
    cmd += ["--endpoint", endpoints["main"], "--workload", workload, "--count", str(count)]
    cmd += ["--concurrency", str(concurrency), "--run-id", run_id]
    if "remote" in endpoints:
        cmd += ["--remote", endpoints["remote"]]
    return cmd + extra


def run_once(cmd: list[str], server: Server, timeout: float, log: Path) -> dict[str, Any]:
    """Runs the load generator once; returns its result line plus exit code and memory readings."""
    result: dict[str, Any] | None = None
    waiting_memory = None
    junk: list[str] = []
    mongo_before = mongostats.sample(server.mongo_url) if server.mongo_url else None
    cpu_before = _cpu(server.cpu_pids)
    mongod_before = cpu_seconds(server.mongod_pid)
    children_before = _children_cpu()
    with log.open("w") as err:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
        )
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            proc.kill()

        timer = threading.Timer(timeout + KILL_GRACE, kill)
        timer.start()
        try:
            assert proc.stdout is not None and proc.stdin is not None
            for line in proc.stdout:
                try:
                    obj = json.loads(line)
                except ValueError:
                    junk.append(line.rstrip()[:200])
                    continue
                if obj.get("phase") == "waiting":
                    waiting_memory = rss_kb(server.pid)
                    proc.stdin.write("\n")
                    proc.stdin.flush()
                elif "workload" in obj:
                    result = obj
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    memory = rss_kb(server.pid)
    cpu_after = _cpu(server.cpu_pids)
    mongod_after = cpu_seconds(server.mongod_pid)
    loadgen_cpu = _children_cpu() - children_before
    mongo_after = mongostats.sample(server.mongo_url) if mongo_before and server.mongo_url else None

    problems = []
    if killed.is_set():
        problems.append(f"killed after {timeout + KILL_GRACE:.0f}s")
    if not server.alive():
        problems.append(
            f"the server exited (code {server.proc.returncode if server.proc else '?'}); see {server.log}"
        )
    if result is None:
        tail = log.read_text(errors="replace")[-1500:]
        problems.append(f"no result line (exit {code}); stdout junk {junk[:3]}; stderr tail: {tail}")
        result = {"workflows": None, "completed": 0, "failures": 1, "errors": []}
    result["errors"] = list(result.get("errors") or []) + problems
    if problems:
        result["failures"] = max(int(result.get("failures") or 0), 1)
    result["exit_code"] = code
    result["memory_after"] = memory
    if cpu_before is not None and cpu_after is not None:
        result["server_cpu_s"] = cpu_after - cpu_before  # the server's CPU for this run, all threads
    if mongod_before is not None and mongod_after is not None:
        result["mongod_cpu_s"] = mongod_after - mongod_before
    if mongo_before is not None and mongo_after is not None:
        result["mongo"] = mongostats.delta(mongo_before, mongo_after)  # operations, transactions
    # The load generator's own CPU: the SDK's side (replaying histories, (de)serialising).
    result["loadgen_cpu_s"] = loadgen_cpu
    if waiting_memory is not None:
        result["memory_waiting"] = waiting_memory
    return result


def _cpu(pids: list[int]) -> float | None:
    """The summed CPU of the server's processes (daprd is four); None if any is unknown."""
    readings = [cpu_seconds(pid) for pid in pids]
    if not readings or any(r is None for r in readings):
        return None
    return sum(r for r in readings if r is not None)


def _children_cpu() -> float:
    """CPU of the children reaped so far; the servers are reaped only when they stop, so the
    difference across one run is that run's load generator."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
