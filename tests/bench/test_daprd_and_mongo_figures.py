"""The daprd targets' plumbing (component files, options) and the MongoDB cost figures
(operations and transactions per workflow), without building daprd: that takes minutes and
is for `python -m bench`, never CI."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from bench import build, cli, mongostats, report, results
from bench.dapr_targets import component_yaml, mongo_metadata
from bench.targets import TargetError

CHAIN: dict[str, Any] = {
    "workload": "chain",
    "workflows": 10,
    "completed": 10,
    "failures": 0,
    "errors": [],
    "activities": 50,
    "seconds": 1.0,
    "workflows_per_s": 10.0,
    "activities_per_s": 50.0,
    "exit_code": 0,
    "server_cpu_s": 0.5,
    "mongod_cpu_s": 0.25,
    "mongo": {
        "ops": {
            "insert": 300,
            "query": 200,
            "update": 10,
            "delete": 100,
            "getmore": 50,
            "command": 440,
            "total": 1100,
        },
        "transactions": {"totalStarted": 120, "totalCommitted": 110, "totalAborted": 10},
    },
}


def test_a_sqlite_component_holds_actor_state() -> None:
    doc = yaml.safe_load(component_yaml("sqlite", {"connectionString": '/tmp/a "b".db'}))
    assert doc["kind"] == "Component"
    assert doc["spec"]["type"] == "state.sqlite"
    meta = {m["name"]: m["value"] for m in doc["spec"]["metadata"]}
    assert meta == {"connectionString": '/tmp/a "b".db', "actorStateStore": "true"}


def test_a_mongodb_component_is_majority_on_the_replica_set() -> None:
    meta = mongo_metadata("mongodb://127.0.0.1:4000,127.0.0.1:4001/?replicaSet=rs0", "bench_x")
    assert meta == {
        "host": "127.0.0.1:4000,127.0.0.1:4001",
        "databaseName": "bench_x",
        "writeConcern": "majority",
        "readConcern": "majority",
        "params": "?replicaSet=rs0",
    }
    doc = yaml.safe_load(component_yaml("mongodb", meta))
    assert doc["spec"]["type"] == "state.mongodb"
    assert {m["name"]: m["value"] for m in doc["spec"]["metadata"]}["actorStateStore"] == "true"


def test_a_mongodb_url_without_a_host_is_refused() -> None:
    with pytest.raises(TargetError, match="no host"):
        mongo_metadata("mongodb:///db", "x")


def test_the_daprd_targets_are_known_and_their_version_comes_from_go_mod() -> None:
    args = cli.parse_args(["--targets", "daprd-mongo,daprd-sqlite,ours-mongo", "--scale", "smoke"])
    assert args.targets == ["daprd-mongo", "daprd-sqlite", "ours-mongo"]
    assert build.dapr_version().startswith("v1.")
    assert set(cli.COMPARISONS) == {"reference", "daprd-sqlite", "daprd-mongo"}


def test_mongostats_delta_sums_the_operations() -> None:
    before = {f"ops.{k}": 10 for k in mongostats.OPS} | {
        f"transactions.{k}": 5 for k in mongostats.TRANSACTIONS
    }
    after = {f"ops.{k}": 10 + i for i, k in enumerate(mongostats.OPS)} | {
        "transactions.totalStarted": 9,
        "transactions.totalCommitted": 8,
        "transactions.totalAborted": 6,
    }
    d = mongostats.delta(before, after)
    assert d["ops"]["total"] == sum(range(len(mongostats.OPS)))
    assert d["ops"]["insert"] == 0 and d["ops"]["command"] == 5
    assert d["transactions"] == {"totalStarted": 4, "totalCommitted": 3, "totalAborted": 1}


def test_per_workflow_and_per_turn_figures() -> None:
    summary = results.summarize([CHAIN], expected_workflows=10)
    assert summary["per_workflow.server_cpu_ms"]["median"] == pytest.approx(50.0)
    assert summary["per_workflow.mongod_cpu_ms"]["median"] == pytest.approx(25.0)
    assert summary["per_workflow.mongo_ops"]["median"] == pytest.approx(110.0)
    assert summary["per_workflow.mongo_transactions"]["median"] == pytest.approx(11.0)
    # 10 workflows of 5 activities: 60 turns and 50 results.
    assert summary["per_turn_or_result.mongo_ops"]["median"] == pytest.approx(10.0)


def test_a_run_without_mongodb_has_no_mongodb_figures() -> None:
    plain = copy.deepcopy(CHAIN)
    del plain["mongo"], plain["mongod_cpu_s"]
    summary = results.summarize([plain], expected_workflows=10)
    assert not [k for k in summary if "mongo" in k]
    assert summary["per_workflow.server_cpu_ms"]["median"] == pytest.approx(50.0)


def test_the_markdown_shows_the_mongodb_cost_and_the_ratio_to_daprd() -> None:
    slower = copy.deepcopy(CHAIN) | {"workflows_per_s": 4.0}
    doc = {
        "config": {"scale": "smoke", "repeat": 1, "driver": "go", "workloads": ["chain"]},
        "sizes": {"chain": {"count": 10, "concurrency": 5, "timeout": 60}},
        "machine": {"date": "d", "nproc": 2, "cpu_model": "cpu", "memory_gb": 1, "commit": "c"},
        "mongo_ceiling": None,
        "results": {
            "ours-mongo": {"chain": {**results.judge([CHAIN], 10), "runs": [CHAIN]}},
            "daprd-mongo": {"chain": {**results.judge([slower], 10), "runs": [slower]}},
        },
    }
    md = report.markdown(doc)
    row = next(line for line in md.splitlines() if line.startswith("| chain | ours-mongo | 10.0 |"))
    assert row.rstrip().endswith("| 2.50x |")  # 10 vs 4 workflows/s
    assert "| chain | ours-mongo | 50.0 | 25.0 | 110 | 11.0 | 10.0 | insert 30.0," in md
    assert "| chain | daprd-mongo | 50.0 | 25.0 | 110 |" in md
