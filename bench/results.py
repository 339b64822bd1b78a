"""Judging and summarising runs: figures from a run with a wrong or missing answer are refused.

A workload's summary is the median, min, max and every run's value (in run order, so a
throughput that decays across repeats on one server shows) of each figure.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.stats import spread


class InvalidRun(ValueError):
    """A run that did not complete every workflow with the expected output."""


def problems(run: dict[str, Any], expected_workflows: int | None = None) -> list[str]:
    """What is wrong with one run's record; empty when every workflow completed correctly."""
    out = []
    failures = run.get("failures")
    if not isinstance(failures, int) or failures != 0:
        errors = "; ".join(str(e) for e in (run.get("errors") or [])[:3])
        out.append(f"{failures} failed workflow(s): {errors}" if errors else f"{failures} failed workflow(s)")
    workflows = run.get("workflows")
    if expected_workflows is not None and workflows != expected_workflows:
        out.append(f"ran {workflows} workflows, expected {expected_workflows}")
    if not isinstance(workflows, int) or workflows < 1 or run.get("completed") != workflows:
        out.append(f"{run.get('completed')} of {workflows} workflows completed with the expected output")
    if run.get("exit_code", 0) != 0:
        out.append(f"the load generator exited with {run.get('exit_code')}")
    seconds = run.get("seconds")
    if not isinstance(seconds, int | float) or seconds <= 0:
        out.append(f"no duration ({seconds!r})")
    return out


def _figures(run: dict[str, Any]) -> dict[str, float]:
    """The numbers worth a median across runs, flattened."""
    out: dict[str, float] = {}
    for key in (
        "workflows_per_s",
        "activities_per_s",
        "seconds",
        "start_seconds",
        "server_cpu_s",
        "mongod_cpu_s",
        "loadgen_cpu_s",
    ):
        if isinstance(run.get(key), int | float):
            out[key] = float(run[key])
    for group in ("latency_ms", "server_latency_ms"):
        for p in ("p50", "p95", "p99"):
            value = (run.get(group) or {}).get(p)
            if isinstance(value, int | float):
                out[f"{group}.{p}"] = float(value)
    mongo = run.get("mongo") or {}
    for group in ("ops", "transactions"):  # MongoDB's counters over the run (bench/mongostats.py)
        for key, value in (mongo.get(group) or {}).items():
            if isinstance(value, int):
                out[f"mongo.{group}.{key}"] = float(value)
    out |= _per_workflow(run, out)
    for group in ("memory_after", "memory_waiting"):
        for key in ("rss_kb", "peak_kb"):
            value = (run.get(group) or {}).get(key)
            if isinstance(value, int):
                out[f"{group}.{key}"] = float(value)
    return out


def _per_workflow(run: dict[str, Any], figures: dict[str, float]) -> dict[str, float]:
    """CPU and MongoDB work divided by the run's workflows, and MongoDB operations per turn or
    activity result: a workflow of N sequential activities has N+1 turns and N results, so
    `workflows + 2 x activities` (exact for chain, latency, long and multiapp; for fanout and
    events the turns depend on batching, and the report leaves it out)."""
    workflows, activities = run.get("workflows"), run.get("activities")
    if not isinstance(workflows, int) or workflows < 1:
        return {}
    out = {}
    for key, name in (("server_cpu_s", "server_cpu_ms"), ("mongod_cpu_s", "mongod_cpu_ms")):
        if key in figures:
            out[f"per_workflow.{name}"] = 1000 * figures[key] / workflows
    for key, name in (
        ("mongo.ops.total", "mongo_ops"),
        ("mongo.transactions.totalCommitted", "mongo_transactions"),
    ):
        if key in figures:
            out[f"per_workflow.{name}"] = figures[key] / workflows
    if "mongo.ops.total" in figures and isinstance(activities, int):
        out["per_turn_or_result.mongo_ops"] = figures["mongo.ops.total"] / (workflows + 2 * activities)
    return out


def summarize(runs: list[dict[str, Any]], expected_workflows: int | None = None) -> dict[str, Any]:
    """Median/min/max/runs of every figure present in all runs; raises InvalidRun if any run failed."""
    if not runs:
        raise InvalidRun("no runs")
    for i, run in enumerate(runs, 1):
        found = problems(run, expected_workflows)
        if found:
            raise InvalidRun(f"run {i}: " + "; ".join(found))
    per_run = [_figures(run) for run in runs]
    keys = [k for k in per_run[0] if all(k in f for f in per_run)]
    summary: dict[str, Any] = {k: spread([f[k] for f in per_run]) for k in keys}
    turns = [run["turns"] for run in runs if run.get("turns")]
    if turns and all(len(t) == len(turns[0]) for t in turns):
        summary["turns"] = [
            {**bucket, "mean_ms": statistics.median(t[i]["mean_ms"] for t in turns)}
            for i, bucket in enumerate(turns[0])
        ]
    return summary


def judge(runs: list[dict[str, Any]], expected_workflows: int | None) -> dict[str, Any]:
    """The status, problems and (only when every run passed) summary of one workload on one target."""
    try:
        return {"status": "ok", "problems": [], "summary": summarize(runs, expected_workflows)}
    except InvalidRun as e:
        return {"status": "failed", "problems": [str(e)], "summary": None}
