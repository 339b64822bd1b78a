"""How much to fuzz, and with which seed: FUZZ_SEED and FUZZ_CASES from the environment.

Without FUZZ_SEED every run draws a fresh seed (each run explores new cases) and a failure
prints it; FUZZ_SEED=<that seed> makes the same cases again. FUZZ_CASES is the number of cases
per store, shared by the three families; the default keeps the suite within about three minutes
on a 2-core machine for SQLite and MongoDB together.
"""

from __future__ import annotations

import os
import random

DEFAULT_CASES = 2500
SEED = int(os.environ.get("FUZZ_SEED") or random.SystemRandom().randrange(1, 2**31))
CASES = int(os.environ.get("FUZZ_CASES") or DEFAULT_CASES)
# Shares of CASES: client RPCs with mutated requests, worker completions, raw bytes.
SHARES = {"client": 0.5, "worker": 0.3, "garbage": 0.2}
# A Hello and the bystander digest after every this many cases.
BATCH = 40


def cases(family: str) -> int:
    return max(1, round(CASES * SHARES[family]))
