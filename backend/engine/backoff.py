"""Retry delays: exponential with jitter, capped, so nothing retries in a hot loop and many
failures do not retry in step."""

from __future__ import annotations

import random


def delay(attempt: int, *, base: float, cap: float) -> float:
    """Seconds before retry number `attempt` (1 = the first retry): base·2^(attempt-1), capped,
    times a jitter factor in [0.5, 1]."""
    raw = min(cap, base * 2.0 ** max(0, attempt - 1))
    return raw * random.uniform(0.5, 1.0)
