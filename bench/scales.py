"""Workload sizes per scale: `full` is issue #5's, `smoke` is for the test suite."""

from __future__ import annotations

from dataclasses import dataclass

WORKLOADS = ("chain", "fanout", "latency", "events", "long", "multiapp")

DESCRIPTIONS = {
    "chain": "5 activities in sequence per workflow, C workflows in flight",
    "fanout": "100 activities in parallel per workflow, summed",
    "latency": "one single-activity workflow at a time (unloaded)",
    "events": "N workflows parked on an external event, then all raised",
    "long": "one workflow with N sequential activities (turn time vs history length)",
    "multiapp": "chain, every activity on app `remote`",
}


@dataclass(frozen=True)
class Size:
    count: int  # workflows (long: activities in its one workflow)
    concurrency: int  # workflows in flight at most (latency and long: 1)
    timeout: float  # seconds one run may take before it counts as failed


SCALES: dict[str, dict[str, Size]] = {
    "full": {
        "chain": Size(1_000, 50, 1800),
        "fanout": Size(100, 50, 1800),
        "latency": Size(200, 1, 900),
        "events": Size(10_000, 100, 3600),
        "long": Size(5_000, 1, 3600),
        "multiapp": Size(1_000, 50, 1800),
    },
    # For development: the shape of `full` in a few minutes.
    "medium": {
        "chain": Size(200, 50, 600),
        "fanout": Size(20, 20, 600),
        "latency": Size(50, 1, 300),
        "events": Size(1_000, 100, 900),
        "long": Size(500, 1, 900),
        "multiapp": Size(200, 50, 600),
    },
    "smoke": {
        "chain": Size(10, 5, 180),
        "fanout": Size(3, 3, 180),
        "latency": Size(5, 1, 180),
        "events": Size(20, 10, 180),
        "long": Size(30, 1, 180),
        "multiapp": Size(5, 5, 180),
    },
}
