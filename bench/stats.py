"""Small statistics shared by the Python load generator and the result aggregation.

Same definitions as bench/loadgen/main.go, so both drivers report comparable figures.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentiles(values: Sequence[float]) -> dict[str, float] | None:
    """p50/p95/p99 by nearest rank, plus mean and max; None for no values."""
    if not values:
        return None
    s = sorted(values)

    def rank(p: float) -> float:
        i = math.ceil(p / 100 * len(s)) - 1
        return s[max(0, min(i, len(s) - 1))]

    return {"p50": rank(50), "p95": rank(95), "p99": rank(99), "mean": sum(s) / len(s), "max": s[-1]}


def turn_buckets(times: Sequence[float | None], buckets: int = 10) -> list[dict[str, float]]:
    """Mean ms per turn in `buckets` equal ranges of history length.

    times[i] is when activity i ran (seconds, monotonic); turn i is times[i] - times[i-1].
    A flat series means a turn does not slow down as the history grows.
    """
    n = len(times)
    if n < 2:
        return []
    buckets = min(buckets, n - 1)
    out = []
    for k in range(buckets):
        lo = 1 + k * (n - 1) // buckets
        hi = 1 + (k + 1) * (n - 1) // buckets
        gaps = []
        for i in range(lo, hi):
            a, b = times[i - 1], times[i]
            if a is not None and b is not None:
                gaps.append((b - a) * 1000)
        out.append(
            {"from_activity": lo, "to_activity": hi, "mean_ms": sum(gaps) / len(gaps) if gaps else 0.0}
        )
    return out


def spread(values: Sequence[float]) -> dict[str, object]:
    """Median, min, max and every value in run order (the order shows any decay across runs)."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
    }
