"""MongoDB operations and transactions per run, from mongod's serverStatus (measured, not
estimated): opcounters and the transactions section, sampled before and after each run.

The counters are the whole mongod's, so they include everything that talks to it during the
run (the server under test, and these two serverStatus calls: 2 commands); the bench gives
each target a mongod of its own.
"""

from __future__ import annotations

from typing import Any

from pymongo import MongoClient

OPS = ("insert", "query", "update", "delete", "getmore", "command")
TRANSACTIONS = ("totalStarted", "totalCommitted", "totalAborted")


def sample(url: str) -> dict[str, int]:
    """The counters now: `ops.<kind>` and `transactions.<field>`."""
    client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=10000)
    try:
        status = client.admin.command("serverStatus")
    finally:
        client.close()
    out = {f"ops.{k}": int(status.get("opcounters", {}).get(k, 0)) for k in OPS}
    tx = status.get("transactions", {})
    out |= {f"transactions.{k}": int(tx.get(k, 0)) for k in TRANSACTIONS}
    return out


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    """What one run cost: operations by kind and in total, transactions started/committed/aborted."""
    ops = {k: after[f"ops.{k}"] - before[f"ops.{k}"] for k in OPS}
    tx = {k: after[f"transactions.{k}"] - before[f"transactions.{k}"] for k in TRANSACTIONS}
    return {"ops": {**ops, "total": sum(ops.values())}, "transactions": tx}
