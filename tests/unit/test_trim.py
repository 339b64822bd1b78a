"""When the server gives freed memory back (service/trim.py): after enough bytes of large requests
were released, or at the end of a burst, at most once a second; never without a trim function."""

from __future__ import annotations

import asyncio

from backend.service.admission import RequestBudget
from backend.service.trim import TRIM_AFTER_BYTES, Trimmer


async def test_a_burst_ending_trims_once() -> None:
    calls: list[int] = []
    budget = RequestBudget(1 << 30, Trimmer(lambda: calls.append(1)))
    a, b = budget.take(1 << 20), budget.take(1 << 20)
    assert a is not None and b is not None
    a.release()
    await asyncio.sleep(0.01)
    assert calls == []  # one still held, and far below TRIM_AFTER_BYTES
    b.release()
    b.release()  # at most once
    await asyncio.sleep(0.01)
    assert calls == [1]
    assert budget.held == 0


async def test_many_released_bytes_trim_while_others_are_held_at_most_once_a_second() -> None:
    calls: list[int] = []
    trimmer = Trimmer(lambda: calls.append(1))
    trimmer.released(TRIM_AFTER_BYTES, idle=False)
    await asyncio.sleep(0.01)
    assert calls == [1]
    trimmer.released(TRIM_AFTER_BYTES, idle=False)
    await asyncio.sleep(0.2)
    assert calls == [1]  # the next waits for the interval
    await asyncio.sleep(1.0)
    assert calls == [1, 1]


async def test_a_dropped_reservation_is_given_back() -> None:
    budget = RequestBudget(10, Trimmer(lambda: None))
    assert budget.take(8) is not None  # dropped at once, as when a call ends before its handler
    assert budget.held == 0
    assert budget.take(11) is None
