"""Stateful-history deltas: dapr 1.19 workers advertise WORKER_CAPABILITY_STATEFUL_HISTORY.

The server logs, at debug level, one line per WorkflowRequest it dispatches:
    dispatch workflow instance=<id> app=<app> past=<n> new=<m> cached=<k|none>
After the first turn, later turns of the same instance on the same connected worker must
be deltas: cached=<k> where k is exactly the history the worker already holds (all past
events of the previous turn), and past holds only the events committed since.
"""

from __future__ import annotations

import itertools
import re

import pytest
from dapr.ext.workflow import when_all

from tests.e2e.dapr.support import (
    assert_completed,
    running_runtime,
    uid,
    wait_custom_status,
    workflow_client,
)
from tests.e2e.harness import Server, wait_until

pytestmark = pytest.mark.timeout(180)

DISPATCH_RE = re.compile(
    r"dispatch workflow instance=(?P<iid>\S+) app=(?P<app>\S+) "
    r"past=(?P<past>\d+) new=(?P<new>\d+) cached=(?P<cached>\d+|none)"
)

CHAIN = 25


def inc(ctx, x):
    return x + 1


def long_chain_wf(ctx, n):
    x = 0
    for _ in range(n):
        x = yield ctx.call_activity(inc, input=x)
    return x


def chain_of_fanouts_wf(ctx, rounds):
    total = 0
    for r in range(rounds):
        vals = yield when_all([ctx.call_activity(inc, input=r * 10 + i) for i in range(5)])
        total += sum(vals)
    return total


def dispatches(server: Server, iid: str) -> list[dict]:
    out = []
    for m in DISPATCH_RE.finditer(server.log_text):
        if m.group("iid") != iid:
            continue
        out.append(
            {
                "app": m.group("app"),
                "past": int(m.group("past")),
                "new": int(m.group("new")),
                "cached": None if m.group("cached") == "none" else int(m.group("cached")),
            }
        )
    return out


@pytest.fixture(scope="module")
def env():
    with (
        Server(["stateful"], log_level="debug") as srv,
        running_runtime(srv.port(), [long_chain_wf, chain_of_fanouts_wf], [inc]),
        workflow_client(srv.port()) as c,
    ):
        yield srv, c


def _check_deltas(turns: list[dict], min_turns: int) -> None:
    assert len(turns) >= min_turns, turns
    assert turns[0]["cached"] is None, f"first turn must be a full send: {turns[0]}"
    assert all(t["app"] == "stateful" for t in turns), turns
    # At most the first turn or two are full sends; after that everything is a delta.
    assert all(t["cached"] is not None for t in turns[2:]), turns
    prev = None
    for t in turns:
        if t["cached"] is not None:
            assert t["cached"] > 0, t
            # A delta carries only what was committed since the previous turn.
            assert t["past"] <= 10, f"delta with a large pastEvents: {t} (all: {turns})"
            if prev is not None:
                # The worker caches exactly the full past of its previous turn, so the
                # server must say it has (previous cached + previous past) events.
                expected = (prev["cached"] or 0) + prev["past"]
                assert t["cached"] == expected, (
                    f"cachedHistory.eventCount={t['cached']} but the worker holds {expected} "
                    f"events (prev turn {prev}); this forces a GetInstanceHistory cache miss"
                )
        prev = t
    full_equivalent = [(t["cached"] or 0) + t["past"] for t in turns]
    assert full_equivalent == sorted(full_equivalent), f"history shrank between turns: {turns}"
    assert sum(t["past"] for t in turns) < sum(full_equivalent) / 3, turns


def test_long_chain_uses_history_deltas(env):
    server, client = env
    iid = client.schedule_new_workflow(long_chain_wf, input=CHAIN, instance_id=uid("chain"))
    assert assert_completed(client, iid, timeout=120) == CHAIN
    turns = wait_until(
        lambda: (t := dispatches(server, iid)) and len(t) >= CHAIN + 1 and t,
        timeout=10,
        message=f"dispatch debug lines for {iid} (is the server logging them at debug level?)",
    )
    _check_deltas(turns, CHAIN + 1)


def test_chain_of_fanouts_uses_history_deltas(env):
    server, client = env
    iid = client.schedule_new_workflow(chain_of_fanouts_wf, input=6, instance_id=uid("fanchain"))
    expected = sum(r * 10 + i + 1 for r in range(6) for i in range(5))
    assert assert_completed(client, iid, timeout=120) == expected
    turns = wait_until(
        lambda: (t := dispatches(server, iid)) and len(t) >= 7 and t,
        timeout=10,
        message=f"dispatch debug lines for {iid}",
    )
    assert turns[0]["cached"] is None
    assert all(t["cached"] is not None for t in turns[2:]), turns
    for prev, t in itertools.pairwise(turns):
        if t["cached"] is not None:
            assert t["cached"] == (prev["cached"] or 0) + prev["past"], (prev, t)


def test_many_long_chains_concurrently(env):
    """Several instances interleaving on one stream each keep their own delta bookkeeping."""
    server, client = env
    ids = [
        client.schedule_new_workflow(long_chain_wf, input=20, instance_id=uid(f"multi{i}")) for i in range(5)
    ]
    for iid in ids:
        assert assert_completed(client, iid, timeout=120) == 20
    for iid in ids:
        turns = wait_until(
            lambda iid=iid: (t := dispatches(server, iid)) and len(t) >= 21 and t,
            timeout=10,
            message=f"dispatch lines for {iid}",
        )
        _check_deltas(turns, 21)


def wait_event_then_chain_wf(ctx, n):
    x = 0
    for _ in range(n):
        x = yield ctx.call_activity(inc, input=x)
    ctx.set_custom_status('"waiting"')
    v = yield ctx.wait_for_external_event("resume")
    for _ in range(n):
        x = yield ctx.call_activity(inc, input=x)
    return {"x": x, "v": v}


def test_new_stream_gets_a_full_history_first():
    """The server forgets what a stream had cached once the stream is gone."""
    with Server(["stateful2"], log_level="debug") as srv, workflow_client(srv.port()) as client:
        with running_runtime(srv.port(), [wait_event_then_chain_wf], [inc]):
            iid = client.schedule_new_workflow(wait_event_then_chain_wf, input=5, instance_id=uid("recon"))
            wait_custom_status(client, iid, "waiting")
        before = len(dispatches(srv, iid))
        # A new runtime is a new GetWorkItems stream with an empty worker-side cache.
        with running_runtime(srv.port(), [wait_event_then_chain_wf], [inc]):
            client.raise_workflow_event(iid, "resume", data="r")
            assert assert_completed(client, iid) == {"x": 10, "v": "r"}
            turns = wait_until(
                lambda: (t := dispatches(srv, iid)) and len(t) >= before + 6 and t,
                timeout=10,
                message="dispatch lines after the reconnect",
            )
    after = turns[before:]
    assert after[0]["cached"] is None, (
        f"first dispatch on a new stream must carry the full history, got {after[0]} (all turns: {turns})"
    )
    assert after[0]["past"] >= turns[before - 1]["past"] + (turns[before - 1]["cached"] or 0), (
        after[0],
        turns[before - 1],
    )
    assert all(t["cached"] is not None for t in after[2:]), after


def test_worker_without_stateful_capability_gets_full_histories():
    with (
        Server(["stateless"], log_level="debug") as srv,
        running_runtime(srv.port(), [long_chain_wf], [inc], disable_stateful_history=True),
        workflow_client(srv.port()) as client,
    ):
        iid = client.schedule_new_workflow(long_chain_wf, input=10, instance_id=uid("nocache"))
        assert assert_completed(client, iid) == 10
        turns = wait_until(
            lambda: (t := dispatches(srv, iid)) and len(t) >= 11 and t,
            timeout=10,
            message="dispatch lines",
        )
    assert all(t["cached"] is None for t in turns), turns
    pasts = [t["past"] for t in turns]
    assert pasts == sorted(pasts) and pasts[-1] > pasts[1], pasts
