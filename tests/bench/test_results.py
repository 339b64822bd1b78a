"""The aggregation refuses figures from wrong answers; the statistics are the Go driver's."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bench import report, results
from bench.stats import percentiles, spread, turn_buckets
from bench.targets import parse_endpoints

GOOD: dict[str, Any] = {
    "workload": "chain",
    "driver": "go",
    "workflows": 10,
    "completed": 10,
    "failures": 0,
    "errors": [],
    "activities": 50,
    "seconds": 0.5,
    "workflows_per_s": 20.0,
    "activities_per_s": 100.0,
    "latency_ms": {"p50": 10.0, "p95": 20.0, "p99": 30.0, "mean": 12.0, "max": 31.0},
    "exit_code": 0,
    "memory_after": {"rss_kb": 1000, "peak_kb": 2000},
}


def run(**changes: Any) -> dict[str, Any]:
    r = copy.deepcopy(GOOD)
    r.update(changes)
    return r


def test_a_correct_run_has_no_problems() -> None:
    assert results.problems(run(), expected_workflows=10) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"failures": 1, "errors": ["wf-3: output 7, want 8"]},
        {"completed": 9},
        {"exit_code": 1},
        {"workflows": 5, "completed": 5},  # fewer than asked for
        {"failures": None},
        {"seconds": 0},
    ],
)
def test_a_wrong_run_is_refused(changes: dict[str, Any]) -> None:
    bad = run(**changes)
    assert results.problems(bad, expected_workflows=10)
    with pytest.raises(results.InvalidRun):
        results.summarize([run(), bad], expected_workflows=10)
    judged = results.judge([run(), bad], expected_workflows=10)
    assert judged["status"] == "failed"
    assert judged["summary"] is None


def test_failures_are_named() -> None:
    found = results.problems(run(failures=2, errors=["wf-1: status FAILED"]), 10)
    assert any("2 failed" in p and "wf-1: status FAILED" in p for p in found)


def test_summary_keeps_every_run_in_order() -> None:
    s = results.summarize([run(workflows_per_s=3.0), run(workflows_per_s=1.0), run(workflows_per_s=2.0)], 10)
    assert s["workflows_per_s"] == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": [3.0, 1.0, 2.0]}
    assert s["latency_ms.p99"]["median"] == 30.0
    assert s["memory_after.peak_kb"]["max"] == 2000.0


def test_summary_of_turn_buckets_is_the_median_per_bucket() -> None:
    a = run(workflows=1, completed=1, turns=[{"from_activity": 1, "to_activity": 3, "mean_ms": 1.0}])
    b = run(workflows=1, completed=1, turns=[{"from_activity": 1, "to_activity": 3, "mean_ms": 3.0}])
    c = run(workflows=1, completed=1, turns=[{"from_activity": 1, "to_activity": 3, "mean_ms": 2.0}])
    assert results.summarize([a, b, c], 1)["turns"] == [
        {"from_activity": 1, "to_activity": 3, "mean_ms": 2.0}
    ]


def test_no_runs_is_not_a_result() -> None:
    with pytest.raises(results.InvalidRun):
        results.summarize([])


def test_percentiles_by_nearest_rank() -> None:
    p = percentiles([float(v) for v in range(1, 101)])
    assert p == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "mean": 50.5, "max": 100.0}
    assert percentiles([]) is None
    assert percentiles([7.0])["p99"] == 7.0  # type: ignore[index]


def test_turn_buckets() -> None:
    times = [0.0, 0.001, 0.002, 0.004, 0.006]  # turns of 1, 1, 2, 2 ms
    assert turn_buckets(times, 2) == [
        {"from_activity": 1, "to_activity": 3, "mean_ms": pytest.approx(1.0)},
        {"from_activity": 3, "to_activity": 5, "mean_ms": pytest.approx(2.0)},
    ]
    assert turn_buckets([0.0]) == []
    assert len(turn_buckets([float(i) for i in range(5)], 10)) == 4


def test_spread() -> None:
    assert spread([2.0, 4.0]) == {"median": 3.0, "min": 2.0, "max": 4.0, "runs": [2.0, 4.0]}


def test_parse_endpoints() -> None:
    assert parse_endpoints("main=h:1,remote=h:2") == {"main": "h:1", "remote": "h:2"}
    assert parse_endpoints("h:1") == {"main": "h:1"}
    with pytest.raises(ValueError):
        parse_endpoints("remote=h:2")


def test_the_markdown_shows_a_failure_and_no_figures_for_it() -> None:
    doc = {
        "config": {"scale": "smoke", "repeat": 1, "driver": "go", "workloads": ["chain"]},
        "sizes": {"chain": {"count": 10, "concurrency": 5, "timeout": 60}},
        "machine": {"date": "d", "nproc": 2, "cpu_model": "cpu", "memory_gb": 1, "commit": "c"},
        "mongo_ceiling": None,
        "results": {
            "ours-sqlite": {"chain": {**results.judge([run()], 10), "runs": [run()]}},
            "reference": {"chain": {**results.judge([run(completed=9)], 10), "runs": [run(completed=9)]}},
        },
    }
    md = report.markdown(doc)
    assert "| chain | ours-sqlite | 20.0 |" in md
    assert "| chain | reference | **FAILED**: run 1: 9 of 10 workflows completed" in md
