"""`python -m bench` at smoke scale against our server (SQLite): correctness only, never timing.

Needs Go on PATH (it builds bench/loadgen); without it the run fails, on purpose: CI must not
silently skip the load driver.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.scales import SCALES, WORKLOADS

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(900)  # a cold Go build cache downloads and compiles the SDK


def run_bench(out: Path, *args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench", "--scale", "smoke", "--targets", "ours-sqlite", "--repeat", "1"]
    done = subprocess.run(
        [*cmd, "--out", str(out), *args], cwd=ROOT, capture_output=True, text=True, timeout=840, check=False
    )
    assert done.returncode == 0, f"python -m bench failed ({done.returncode}):\n{done.stderr[-4000:]}"
    doc: dict[str, Any] = json.loads(next(out.glob("e2e*.json")).read_text())
    return doc


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
