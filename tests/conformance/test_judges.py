"""The runner's newer expectation kinds (conformance/judges.py) fail what is broken: events
recorded out of order, too few events of a kind, the wrong patches, a stateful stream sent full
histories, a stateless stream sent deltas. The last test runs the real runner, server and
Python harness on `stateful_history` with an expectation it cannot meet."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from conformance import judges

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "conformance" / "scenarios"


def _raised(name: str, value: object) -> hpb.HistoryEvent:
    e = hpb.HistoryEvent()
    e.eventRaised.name = name
    e.eventRaised.input.value = json.dumps(value)
    return e


def _turn(*patches: str) -> hpb.HistoryEvent:
    e = hpb.HistoryEvent()
    e.workflowStarted.version.CopyFrom(opb.WorkflowVersion(patches=list(patches)))
    return e


def test_events_in_order_passes_raise_order_and_fails_anything_else() -> None:
    ordered = [_raised("e", n) for n in (1, 2, 3)] + [_raised("other", 0)]
    assert judges.history_problems(ordered, {"events_in_order": "e"}) == []
    swapped = [_raised("e", n) for n in (1, 3, 2)]
    (problem,) = judges.history_problems(swapped, {"events_in_order": "e"})
    assert "out of raise order: [1, 3, 2]" in problem
    twice = [_raised("e", n) for n in (1, 1, 2)]
    assert judges.history_problems(twice, {"events_in_order": "e"})
    assert judges.history_problems([], {"events_in_order": "e"}) == ["history has no eventRaised 'e'"]


def test_history_at_least_and_patches() -> None:
    events = [_turn(), _turn("fix"), _raised("e", 1)]
    assert judges.history_problems(events, {"history_at_least": {"eventRaised": 1}, "patches": ["fix"]}) == []
    problems = judges.history_problems(events, {"history_at_least": {"eventRaised": 2}, "patches": []})
    assert problems == [
        "history has 1 eventRaised, expected at least 2",
        "patches recorded on the turns are ['fix'], expected []",
    ]


def test_sends_judge_stateful_and_stateless_streams() -> None:
    spec = {"app": "main", "min_sends": 7}
    good, note = judges.sends_problems(spec, [judges.Sends(1, True, 2, 5)], [])
    assert good == [] and note == "stateful: 2 full, 5 delta"
    bad, _ = judges.sends_problems(spec, [judges.Sends(1, True, 7, 0)], [])
    assert bad == ["stateful stream 1 got 7 full histories and 0 deltas"]
    assert judges.sends_problems(spec, [judges.Sends(2, False, 7, 0)], [])[0] == []
    bad, _ = judges.sends_problems(spec, [judges.Sends(2, False, 6, 1)], [])
    assert bad == ["stream 2 did not announce stateful history but got 1 deltas"]
    bad, _ = judges.sends_problems(spec, [judges.Sends(3, True, 1, 1)], [4])
    assert bad == ["stream 4 never logged its close", "2 workflow work items sent, expected at least 7"]
    assert judges.sends_problems(spec, [], [])[0] == ["no workflow work item was sent to app main"]


def test_streams_of_reads_only_the_scenario_part_of_the_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "worker stream 1 of app main connected: stateful=True\n"
        "worker stream 1 of app main closed: stateful=True workflow_sends full=9 delta=9\n"
    )
    offset = judges.log_offset(log)
    with log.open("a") as f:
        f.write(
            "worker stream 2 of app main connected: stateful=False\n"
            "worker stream 3 of app remote connected: stateful=True\n"
            "worker stream 2 of app main closed: stateful=False workflow_sends full=7 delta=0\n"
            "worker stream 4 of app main connected: stateful=True\n"
        )
    streams, still_open = judges.streams_of(log, offset, "main", wait=0.2)
    assert streams == [judges.Sends(2, False, 7, 0)]
    assert still_open == [4]


def test_a_known_sdk_bug_explains_only_its_own_problem() -> None:
    spec = {"sdk_bugs": {"java": {"bug": "carries events in a HashSet", "problems_contain": "main: output"}}}
    assert (
        judges.known_sdk_bug(spec, "java", ["main: output [2, 1], expected [1, 2]"])
        == "carries events in a HashSet"
    )
    assert judges.known_sdk_bug(spec, "java@1.17.1", ["main: output [2, 1]"]) == "carries events in a HashSet"
    # Another problem besides it, another SDK, or no problem at all: not the known bug.
    assert judges.known_sdk_bug(spec, "java", ["main: output [2, 1]", "main: status FAILED"]) == ""
    assert judges.known_sdk_bug(spec, "go", ["main: output [2, 1]"]) == ""
    assert judges.known_sdk_bug(spec, "java", []) == ""
    listed = {"sdk_bugs": {"java": {"bug": "b", "problems_contain": ["main: output", "out of raise order"]}}}
    assert judges.known_sdk_bug(
        listed, "java", ["main: output [2, 1]", "main: eventRaised 'e' out of raise order"]
    )


def test_runner_fails_a_stateful_history_run_that_cannot_meet_its_sends(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    shutil.copytree(SCENARIOS / "stateful_history", scenarios / "stateful_history")
    spec_path = scenarios / "stateful_history" / "scenario.json"
    spec = json.loads(spec_path.read_text())
    spec["workflow_sends"]["min_sends"] = 100
    spec_path.write_text(json.dumps(spec))
    report = tmp_path / "report.json"
    args = ["--sdk", "python", "--scenarios-dir", str(scenarios), "--json", str(report)]
    proc = subprocess.run(
        [sys.executable, "-m", "conformance.runner", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (result,) = json.loads(report.read_text())["results"]
    assert result["passed"] is False
    assert "7 workflow work items sent, expected at least 100" in result["reason"]
