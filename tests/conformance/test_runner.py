"""The conformance runner fails what is broken: a wrong expectation, a silent
harness, a harness without the right token. (Runs the real runner, server and Python SDK
harness as processes.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "conformance" / "scenarios"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conformance.runner", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_runner_passes_a_good_scenario_and_fails_a_broken_one(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    for name in ("hello_chain", "durable_timer"):
        shutil.copytree(SCENARIOS / name, scenarios / name)
    broken = scenarios / "durable_timer" / "scenario.json"
    spec = json.loads(broken.read_text())
    spec["expect"]["main"]["output"] = "not what the workflow returns"
    broken.write_text(json.dumps(spec))

    report = tmp_path / "report.json"
    proc = _run("--sdk", "python", "--scenarios-dir", str(scenarios), "--json", str(report))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = {r["scenario"]: r for r in json.loads(report.read_text())["results"]}
    assert results["hello_chain"]["passed"] is True
    assert results["durable_timer"]["passed"] is False
    assert "not what the workflow returns" in results["durable_timer"]["reason"]
    assert "1 passed, 1 failed" in proc.stdout


def test_a_harness_that_reports_nothing_has_failed(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    silent = f"{sys.executable} -c pass"
    proc = _run(
        "--harness", f"silent={silent}", "--sdk", "silent", "--scenario", "hello_chain", "--json", str(report)
    )
    assert proc.returncode == 1
    (result,) = json.loads(report.read_text())["results"]
    assert result["passed"] is False and "no result line" in result["reason"]


def test_a_wrong_fact_or_a_present_purged_instance_fails(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    for name in ("custom_status", "purge_recursive"):
        shutil.copytree(SCENARIOS / name, scenarios / name)
    spec_path = scenarios / "custom_status" / "scenario.json"
    spec = json.loads(spec_path.read_text())
    spec["facts"]["first_custom_status"] = "step-0"
    spec_path.write_text(json.dumps(spec))
    spec_path = scenarios / "purge_recursive" / "scenario.json"
    spec = json.loads(spec_path.read_text())
    spec["expect"]["child"] = {"status": "COMPLETED"}  # it was purged: must not exist
    spec_path.write_text(json.dumps(spec))

    report = tmp_path / "report.json"
    proc = _run("--sdk", "python", "--scenarios-dir", str(scenarios), "--json", str(report))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = {r["scenario"]: r for r in json.loads(report.read_text())["results"]}
    assert "fact first_custom_status is 'step-1', expected 'step-0'" in results["custom_status"]["reason"]
    assert "child: instance" in results["purge_recursive"]["reason"]
    assert "does not exist" in results["purge_recursive"]["reason"]


WRONG_TOKEN_HARNESS = """
import os, sys
wrong, harness, *args = sys.argv[1:]
for i in range(1, len(args)):
    if args[i - 1] == "--app-token":  # keep APP=, swap its token file for one with a wrong token
        args[i] = args[i].split("=", 1)[0] + "=" + wrong
os.execv(sys.executable, [sys.executable, harness, "--sdk", "legacy", *args])
"""


def test_secure_passes_a_harness_with_the_tokens_and_fails_one_without(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token")
    wrapper = tmp_path / "wrong_token_harness.py"
    wrapper.write_text(WRONG_TOKEN_HARNESS)
    harness = ROOT / "conformance" / "python" / "harness.py"
    impostor = f"impostor={sys.executable} {wrapper} {wrong} {harness}"
    report = tmp_path / "report.json"
    proc = _run(
        "--secure",
        "--harness",
        impostor,
        "--sdk",
        "python-legacy",
        "--sdk",
        "impostor",
        "--scenario",
        "hello_chain",
        "--timeout",
        "60",
        "--json",
        str(report),
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = json.loads(report.read_text())
    assert doc["secure"] is True
    results = {r["sdk"]: r for r in doc["results"]}
    assert results["python-legacy"]["passed"] is True, results["python-legacy"]["reason"]
    assert results["impostor"]["passed"] is False
    # Refused at the door: its worker never got the work-item stream (UNAUTHENTICATED).
    assert "work item stream" in results["impostor"]["reason"], results["impostor"]["reason"]
