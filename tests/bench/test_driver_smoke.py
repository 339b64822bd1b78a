"""`python -m bench` at smoke scale against our server (SQLite): correctness only, never timing.

Needs Go on PATH (it builds bench/loadgen); without it the run fails, on purpose: CI must not
silently skip the load driver.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.scales import SCALES, WORKLOADS
from tests.pki import CA

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(900)  # a cold Go build cache downloads and compiles the SDK


def run_bench(out: Path, *args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench", "--scale", "smoke", "--targets", "ours-sqlite", "--repeat", "1"]
    done = subprocess.run(
        [*cmd, "--out", str(out), *args], cwd=ROOT, capture_output=True, text=True, timeout=840, check=False
    )
    assert done.returncode == 0, f"python -m bench failed ({done.returncode}):\n{_why(out, done.stderr)}"
    doc: dict[str, Any] = json.loads(next(out.glob("e2e*.json")).read_text())
    return doc


def _why(out: Path, stderr: str) -> str:
    """The failed workloads' problems and their run logs' tails first, then stderr's tail: a long
    stderr cut by a CI log viewer must not hide which workload failed."""
    parts = [line for line in stderr.splitlines() if "FAILED" in line or "problem" in line.lower()]
    for path in out.glob("e2e*.json"):
        doc = json.loads(path.read_text())
        for target, per in doc.get("results", {}).items():
            for workload, entry in per.items():
                if entry.get("status") in ("failed", "error"):
                    parts.append(f"{target}/{workload}: {entry.get('problems')}")
                    work = re.search(r"logs in (\S+)", stderr)
                    # the load generator's and the server's logs of that workload (the work dir stays)
                    for log in sorted(Path(work.group(1)).glob(f"*{workload}*.log")) if work else []:
                        parts.append(f"--- {log.name} (tail)\n{log.read_text(errors='replace')[-1500:]}")
    return "\n".join([*parts, "--- stderr (tail)", stderr[-2500:]])


def assert_all_correct(doc: dict[str, Any], workloads: tuple[str, ...], driver: str) -> None:
    per = doc["results"]["ours-sqlite"]
    assert sorted(per) == sorted(workloads)
    for workload in workloads:
        entry = per[workload]
        assert entry["status"] == "ok", (workload, entry["problems"])
        assert len(entry["runs"]) == 1
        run = entry["runs"][0]
        size = SCALES["smoke"][workload]
        expected = 1 if workload == "long" else size.count
        assert run["driver"] == driver
        assert run["workload"] == workload
        assert run["exit_code"] == 0
        assert run["failures"] == 0, run["errors"]
        assert run["errors"] == []
        assert run["workflows"] == run["completed"] == expected
        if workload == "long":
            assert run["activities"] == size.count
            assert len(run["turns"]) == 10
        if workload == "events":
            assert run["memory_waiting"]["rss_kb"] > 0
        assert run["memory_after"]["peak_kb"] > 0
        assert run["server_cpu_s"] >= 0
        assert run["loadgen_cpu_s"] >= 0
        assert entry["summary"]["workflows_per_s"]["runs"] == [run["workflows_per_s"]]


def test_go_driver_every_workload(tmp_path: Path) -> None:
    doc = run_bench(tmp_path)
    assert doc["config"]["driver"] == "go"
    assert_all_correct(doc, WORKLOADS, "go")
    assert "| chain | ours-sqlite |" in (tmp_path / "e2e.md").read_text()


def test_python_driver(tmp_path: Path) -> None:
    doc = run_bench(tmp_path, "--driver", "python", "--workloads", "chain,events")
    assert_all_correct(doc, ("chain", "events"), "python")


def test_a_sidecar_that_is_not_there_fails_the_run(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "bench", "--scale", "smoke", "--repeat", "1", "--out", str(tmp_path)]
    cmd += ["--endpoint", "main=127.0.0.1:1", "--workloads", "latency"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 1, done.stderr[-4000:]
    entry = json.loads((tmp_path / "e2e.json").read_text())["results"]["endpoint"]["latency"]
    assert entry["status"] == "failed"
    assert entry["summary"] is None


@pytest.fixture
def secured_server(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """Our server with TLS and a token per app, both apps on one listener (the token alone
    picks the app); yields the --endpoint value and the driver's TLS and token options."""
    ca = CA(tmp_path / "pki")
    pair = ca.server()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    cmd = [sys.executable, "-m", "backend", "serve", "--store", "memory:"]
    cmd += ["--tls-cert", str(pair.cert), "--tls-key", str(pair.key)]
    options = ["--tls-ca", str(ca.cert)]
    for app in ("main", "remote"):
        token = tmp_path / f"{app}.token"
        token.write_text(secrets.token_urlsafe(16))
        token.chmod(0o600)
        cmd += ["--app", f"{app}={address}", "--app-token-file", f"{app}={token}"]
        options += ["--app-token-file", f"{app}={token}"]
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while log.read_text().count("ready: app=") < 2:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield f"main={address},remote={address}", options
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_both_drivers_against_a_server_with_tokens_and_tls(
    tmp_path: Path, secured_server: tuple[str, list[str]]
) -> None:
    endpoint, options = secured_server
    for driver, workloads in (("go", "chain,multiapp"), ("python", "multiapp")):
        out = tmp_path / driver
        doc = run_bench(out, "--driver", driver, "--endpoint", endpoint, "--workloads", workloads, *options)
        for workload in workloads.split(","):
            entry = doc["results"]["endpoint"][workload]
            assert entry["status"] == "ok", (driver, workload, entry["problems"])
        assert doc["targets"]["endpoint"]["tls"] is True

    # The token is what lets the load generator in: a wrong one fails the run.
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token")
    options[options.index("--app-token-file") + 1] = f"main={wrong}"
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "--scale",
        "smoke",
        "--repeat",
        "1",
        "--out",
        str(tmp_path / "wrong"),
    ]
    cmd += ["--endpoint", endpoint, "--workloads", "latency", *options]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 1, done.stderr[-4000:]
    entry = json.loads((tmp_path / "wrong" / "e2e.json").read_text())["results"]["endpoint"]["latency"]
    assert "Unauthenticated" in json.dumps(entry["problems"]), entry["problems"]
