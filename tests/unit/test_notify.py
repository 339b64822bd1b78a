"""The dispatcher signals (backend/engine/notify.py): what a wake-up says, and to whom."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from backend.domain.model import InstanceKey
from backend.engine.notify import Notifier

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_hints_and_due_times_reach_the_apps_dispatcher() -> None:
    n = Notifier()
    n.serve("a")
    n.hint(InstanceKey("a", "i1"))
    n.hint(InstanceKey("a", "i2"))
    n.due("a", T0 + timedelta(seconds=5))
    n.due("a", T0 + timedelta(seconds=2))  # the earliest wins
    n.delivered(InstanceKey("a", "i3"), T0 + timedelta(seconds=9), T0)  # a timer: a due time
    n.delivered(InstanceKey("a", "i4"), None, T0)  # visible now: a hint
    general, hints, due = await n.wait_for_work("a", 5)
    assert not general
    assert hints == {"i1", "i2", "i4"}
    assert due == T0 + timedelta(seconds=2)
    # Taken: the next wait starts empty, and its timeout counts as a general wake (a poll).
    assert await n.wait_for_work("a", 0.01) == (True, set(), None)


async def test_a_general_wake_reaches_one_app_or_all() -> None:
    n = Notifier()
    for app in ("a", "b"):
        n.serve(app)
    n.wake("a")
    assert (await n.wait_for_work("a", 5))[0] is True
    n.wake(None)
    assert (await n.wait_for_work("a", 5))[0] is True
    assert (await n.wait_for_work("b", 5))[0] is True


async def test_signals_for_apps_served_elsewhere_are_dropped() -> None:
    n = Notifier()
    n.serve("a")
    for i in range(1000):
        n.hint(InstanceKey("elsewhere", f"i{i}"))
    n.due("elsewhere", T0)
    n.wake("elsewhere")
    assert "elsewhere" not in n._work  # nothing kept for an app nobody here waits on


async def test_a_waiting_dispatcher_wakes_on_a_hint() -> None:
    n = Notifier()
    n.serve("a")
    waiter = asyncio.create_task(n.wait_for_work("a", 30))
    await asyncio.sleep(0.01)
    n.hint(InstanceKey("a", "x"))
    assert await asyncio.wait_for(waiter, 5) == (False, {"x"}, None)
