"""The workflows the dashboard tests make with the real dapr 1.19 SDK (dapr.ext.workflow).

`order` runs on app orders and crosses to app payments twice: the activity `charge`, and the
child workflow `refund` (itself running `audit` on payments). `flaky` fails twice before it
succeeds (a retry policy), so the timeline has failures and retries to mark."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import dapr.ext.workflow as wf

FLAKY_FAILURES = 2
SHIPMENTS = 2
_attempts: dict[str, int] = {}
_lock = threading.Lock()


def charge(ctx: Any, amount: int) -> str:
    return f"charged {amount}"


def audit(ctx: Any, what: str) -> str:
    return f"audited {what}"


def flaky(ctx: Any, key: str) -> str:
    with _lock:
        _attempts[key] = _attempts.get(key, 0) + 1
        n = _attempts[key]
    if n <= FLAKY_FAILURES:
        raise ValueError(f"flaky attempt {n}")
    return "steady"


def ship(ctx: Any, n: int) -> str:
    return f"shipped {n}"


def explode(ctx: Any, _: Any) -> str:
    raise RuntimeError("the warehouse is on fire")


def refund(ctx: wf.DaprWorkflowContext, amount: int) -> Any:
    result = yield ctx.call_activity("audit", input=f"refund {amount}", app_id="payments")
    return result


def order(ctx: wf.DaprWorkflowContext, amount: int) -> Any:
    paid = yield ctx.call_activity("charge", input=amount, app_id="payments")
    steady = yield ctx.call_activity(
        "flaky",
        input=ctx.instance_id,
        retry_policy=wf.RetryPolicy(
            first_retry_interval=timedelta(milliseconds=100), max_number_of_attempts=5
        ),
    )
    yield ctx.create_timer(timedelta(milliseconds=200))
    shipped = yield wf.when_all([ctx.call_activity("ship", input=n) for n in range(SHIPMENTS)])
    refunded = yield ctx.call_child_workflow("refund", input=1, app_id="payments")
    return [paid, steady, shipped, refunded]


def broken(ctx: wf.DaprWorkflowContext, _: Any) -> Any:
    result = yield ctx.call_activity("explode", input=None)
    return result


def waiter(ctx: wf.DaprWorkflowContext, _: Any) -> Any:
    ctx.set_custom_status("waiting for go")
    value = yield ctx.wait_for_external_event("go")
    return {"got": value}


ORDERS_WORKFLOWS = [order, broken, waiter]
ORDERS_ACTIVITIES = [flaky, ship, explode]
PAYMENTS_WORKFLOWS = [refund]
PAYMENTS_ACTIVITIES = [charge, audit]
