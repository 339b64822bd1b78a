"""The Dapr-level columns (issue #13): registered with the versions the README names, rebuilt
when their sources change, and judged like every other column: a broken expectation fails, and
a scenario the SDK has no API for is n/a naming that API. (The JS case runs the real runner,
server and @dapr/dapr harness as processes; the runner installs the harness with `npm ci`.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conformance import runner

ROOT = Path(__file__).resolve().parents[2]
CONFORMANCE = ROOT / "conformance"
NEW_COLUMNS = ("go-dapr", "java-dapr", "js", "js-dapr", "python-ext")


def test_the_new_columns_are_registered_and_pin_the_named_versions() -> None:
    assert set(NEW_COLUMNS) <= set(runner.SDKS)
    for name in NEW_COLUMNS:
        assert runner.SDKS[name].build, f"{name} has no build step"
    go_mod = (CONFORMANCE / "go-dapr" / "go.mod").read_text()
    assert re.search(r"github.com/dapr/go-sdk v1\.15\.0\b", go_mod)
    pom = (CONFORMANCE / "java-dapr" / "pom.xml").read_text()
    assert "<artifactId>dapr-sdk-workflows</artifactId>" in pom
    assert "<dapr.version>1.17.1</dapr.version>" in pom
    lock = json.loads((CONFORMANCE / "js" / "package-lock.json").read_text())["packages"]
    assert lock["node_modules/@dapr/dapr"]["version"] == "3.18.0"
    assert lock["node_modules/@dapr/durabletask-js"]["version"] == "1.0.0"
    reqs = (CONFORMANCE / "python-ext" / "requirements.txt").read_text().split()
    assert "dapr-ext-workflow==1.18.3" in reqs and "dapr==1.18.3" in reqs


def test_a_column_is_rebuilt_when_its_source_file_changes(tmp_path: Path) -> None:
    built, source = tmp_path / "built", tmp_path / "package-lock.json"
    source.write_text("{}")
    built.write_text("")
    sdk = runner.Sdk("x", ["true"], [["true"]], built, source)
    os.utime(source, (1_000, 1_000))
    os.utime(built, (2_000, 2_000))
    assert sdk.up_to_date()
    os.utime(source, (3_000, 3_000))
    assert not sdk.up_to_date()


def test_a_js_column_fails_a_broken_expectation_and_names_a_missing_api(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    for name in ("hello_chain", "durable_timer", "list_instance_ids"):
        shutil.copytree(CONFORMANCE / "scenarios" / name, scenarios / name)
    broken = scenarios / "durable_timer" / "scenario.json"
    spec = json.loads(broken.read_text())
    spec["expect"]["main"]["output"] = "not what the workflow returns"
    broken.write_text(json.dumps(spec))

    report = tmp_path / "report.json"
    args = ["--sdk", "js-dapr", "--scenarios-dir", str(scenarios), "--json", str(report)]
    proc = subprocess.run(
        [sys.executable, "-m", "conformance.runner", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert report.exists(), f"no report; the runner said: {proc.stdout[-3000:]} {proc.stderr[-3000:]}"
    results = {r["scenario"]: r for r in json.loads(report.read_text())["results"]}
    assert results["hello_chain"]["passed"] is True
    assert results["hello_chain"]["sdk_version"] == "js-dapr@3.18.0"
    assert results["durable_timer"]["passed"] is False
    assert "not what the workflow returns" in results["durable_timer"]["reason"]
    listing = results["list_instance_ids"]
    assert listing["unsupported"] is True and not listing["passed"]
    assert "DaprWorkflowClient has no list-instance-IDs call" in listing["reason"]
    assert "1 passed, 1 failed, 1 skipped" in proc.stdout
