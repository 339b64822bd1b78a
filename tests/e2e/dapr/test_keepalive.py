"""An idle dapr 1.19 worker keeps its work-item stream.

The SDK's channel pings every 30 s (grpc.keepalive_time_ms=30000, permit without calls) and
calls Hello every 30 s. A server whose HTTP/2 ping policy is stricter answers with GOAWAY
(too_many_pings), which tears the stream down and makes the worker reconnect and the server
re-dispatch in-flight work. See PROTOCOL.md 2.2.
"""

from __future__ import annotations

import logging
import time

import pytest

from tests.e2e.dapr.support import assert_completed, running_runtime, uid, workflow_client
from tests.e2e.harness import Server

pytestmark = pytest.mark.timeout(300)

IDLE_SECONDS = 130  # > 4 keepalive intervals: enough pings to trip gRPC's default ping strikes


def noop(ctx, x):
    return x


def noop_wf(ctx, x):
    v = yield ctx.call_activity(noop, input=x)
    return v


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname} {record.getMessage()}")


def test_idle_worker_keeps_its_stream():
    logger = logging.getLogger("durabletask-worker")
    handler = _Records()
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        with (
            Server(["idle"]) as srv,
            running_runtime(srv.port(), [noop_wf], [noop]),
            workflow_client(srv.port()) as client,
        ):
            iid = client.schedule_new_workflow(noop_wf, input=1, instance_id=uid("idle1"))
            assert assert_completed(client, iid) == 1
            connects_before = [m for m in handler.messages if "Created fresh connection" in m]
            assert len(connects_before) == 1, handler.messages

            time.sleep(IDLE_SECONDS)  # scenario: an idle worker (not an assertion on time)

            iid = client.schedule_new_workflow(noop_wf, input=2, instance_id=uid("idle2"))
            assert assert_completed(client, iid) == 2
            trouble = [
                m
                for m in handler.messages
                if "Created fresh connection" in m
                or "Connection error" in m
                or "stream ended" in m
                or "RPC error" in m
            ]
            assert trouble == connects_before, (
                "the idle worker's stream was torn down and re-established:\n"
                + "\n".join(handler.messages)
                + "\n--- server log ---\n"
                + srv.log_tail(40)
            )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
