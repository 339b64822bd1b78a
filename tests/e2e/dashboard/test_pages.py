"""The dashboard in headless Chromium against a server whose workflows the real dapr 1.19 SDK
made, across two apps: the list and its filters, one instance's history and timeline (one bar
per activity, coloured by the app that ran it, failures and retries marked), links between a
parent and its child on another app, and the apps page."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dapr.ext.workflow import DaprWorkflowClient, WorkflowStatus

from tests.e2e.dapr.support import HOST, new_runtime, uid, wait_status
from tests.e2e.dashboard import workflows as w
from tests.e2e.dashboard.support import DashboardServer, fetch, go, next_frame, open_page, shot

pytestmark = pytest.mark.timeout(240)


@dataclass
class World:
    server: DashboardServer
    client: DaprWorkflowClient
    order: str
    broken: str
    waiter: str


@contextlib.contextmanager
def running(server: DashboardServer) -> Iterator[DaprWorkflowClient]:
    orders = new_runtime(server.port("orders"), w.ORDERS_WORKFLOWS, w.ORDERS_ACTIVITIES)
    payments = new_runtime(server.port("payments"), w.PAYMENTS_WORKFLOWS, w.PAYMENTS_ACTIVITIES)
    orders.start()
    payments.start()
    client = DaprWorkflowClient(host=HOST, port=str(server.port("orders")))
    try:
        yield client
    finally:
        client.close()
        orders.shutdown()
        payments.shutdown()


def make_world(server: DashboardServer, client: DaprWorkflowClient) -> World:
    order = client.schedule_new_workflow(w.order, input=42, instance_id=uid("order"))
    broken = client.schedule_new_workflow(w.broken, instance_id=uid("broken"))
    waiter = client.schedule_new_workflow(w.waiter, instance_id=uid("waiter"))
    assert (
        client.wait_for_workflow_completion(order, timeout_in_seconds=60).runtime_status
        == WorkflowStatus.COMPLETED
    )
    assert (
        client.wait_for_workflow_completion(broken, timeout_in_seconds=60).runtime_status
        == WorkflowStatus.FAILED
    )
    wait_status(client, waiter, WorkflowStatus.RUNNING)
    return World(server=server, client=client, order=order, broken=broken, waiter=waiter)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """A read-only dashboard (no --dashboard-actions)."""
    with DashboardServer(["orders", "payments"]) as server, running(server) as client:
        yield make_world(server, client)


def rows(page: Any) -> dict[str, dict[str, str]]:
    """The instance table: instance ID -> {app, status}."""
    out = {}
    for tr in page.locator("[data-testid=instances] tbody tr[data-instance]").all():
        out[tr.get_attribute("data-instance")] = {
            "app": tr.get_attribute("data-app"),
            "status": tr.locator("[data-status]").get_attribute("data-status"),
        }
    return out


def test_the_list_shows_each_sdk_instance_with_its_status(world: World, page: Any, artifacts: Path) -> None:
    open_page(page, world.server.url, ready="/")
    listed = rows(page)
    assert listed[world.order] == {"app": "orders", "status": "COMPLETED"}
    assert listed[world.broken] == {"app": "orders", "status": "FAILED"}
    assert listed[world.waiter] == {"app": "orders", "status": "RUNNING"}
    # The child workflow ran on the other app, and is listed there with its parent.
    children = {i: r for i, r in listed.items() if i.startswith(world.order + ":")}
    assert list(children.values()) == [{"app": "payments", "status": "COMPLETED"}]
    counts = {
        c.get_attribute("data-count-status"): c.inner_text()
        for c in page.locator("[data-count-status]").all()
    }
    assert counts["FAILED"].endswith("1") and counts["RUNNING"].endswith("1"), counts
    assert counts["COMPLETED"].endswith("2"), counts  # the order and its child
    shot(page, artifacts, "instances")

    # Filters: by app, by status; the URL keeps them.
    go(page, "#/?app=payments", "/")
    assert {r["app"] for r in rows(page).values()} == {"payments"}
    go(page, "#/?status=FAILED", "/")
    assert list(rows(page)) == [world.broken]
    go(page, f"#/?prefix={world.waiter[:-2]}", "/")
    assert world.waiter in rows(page) and world.order not in rows(page)


def test_one_instance_shows_history_and_a_timeline_coloured_per_app(
    world: World, page: Any, artifacts: Path
) -> None:
    open_page(
        page, world.server.url + f"#/instance/orders/{world.order}", ready=f"/instance/orders/{world.order}"
    )
    assert (
        page.locator("[data-testid=instance-status] [data-status]").get_attribute("data-status")
        == "COMPLETED"
    )
    assert "charged 42" in page.locator("[data-testid=payload-output]").inner_text()

    # The history table: the SDK's own history, event for event.
    history = world.client.get_workflow_history(world.order)
    table = page.locator("[data-testid=history] tbody tr.event")
    assert table.count() == len(history)
    scheduled = [e for e in history if e.event_type.value == "taskScheduled"]
    assert page.locator('[data-testid=history] tr[data-type="taskScheduled"]').count() == len(scheduled)
    assert (
        page.locator('[data-testid=history] tr[data-type="taskScheduled"][data-app="payments"]').count() == 1
    )
    # A row expands to the whole event.
    table.nth(1).click()
    assert '"executionStarted"' in page.locator("[data-testid=history] tr.detail").inner_text()

    # The timeline: one bar per activity (retries included), on the app that ran it.
    bars = page.evaluate("() => window.dashboardTimeline.data.bars")
    activities = [b for b in bars if b["kind"] == "activity"]
    assert len(activities) == len(scheduled) == 1 + (w.FLAKY_FAILURES + 1) + w.SHIPMENTS
    assert {b["name"]: b["app"] for b in activities} == {
        "charge": "payments",
        "flaky": "orders",
        "ship": "orders",
    }
    flaky = [b for b in activities if b["name"] == "flaky"]
    assert [b["attempt"] for b in flaky] == [1, 2, 3]
    assert [b["outcome"] for b in flaky] == ["failed", "failed", "completed"]
    assert [b["route"] for b in activities if b["name"] == "charge"] == ["orders -> payments"]
    children = [b for b in bars if b["kind"] == "child"]
    assert [(c["app"], c["outcome"]) for c in children] == [("payments", "completed")]
    assert any(b["kind"] == "timer" and b.get("retryOf") == "activity" for b in bars)  # the back-off
    canvas = page.locator("[data-testid=timeline] canvas")
    assert canvas.get_attribute("data-bars") == str(len(bars))

    # Colours as drawn: the pixel in the middle of each activity bar is its app's legend colour.
    legend = {
        e.get_attribute("data-app"): e.get_attribute("data-color")
        for e in page.locator("[data-testid=legend] [data-app]").all()
    }
    assert set(legend) == {"orders", "payments"} and legend["orders"] != legend["payments"]
    assert next_frame(page)  # the canvas draws on the next animation frame
    drawn = page.evaluate(
        """() => { const t = window.dashboardTimeline; const ctx = t.canvas.getContext("2d");
            const dpr = window.devicePixelRatio || 1;
            return t.data.bars.map((b, i) => { if (b.kind !== "activity") return null;
              const box = t.barBox(i); const x = Math.round((box.x + Math.min(box.w / 2, 1.5)) * dpr);
              const y = Math.round((box.y + box.h / 2) * dpr);
              const [r, g, bl] = ctx.getImageData(x, y, 1, 1).data;
              return "#" + [r, g, bl].map(v => v.toString(16).padStart(2, "0")).join(""); }); }"""
    )
    for bar, colour in zip(bars, drawn, strict=True):
        if bar["kind"] == "activity":
            assert colour == legend[bar["app"]], (bar, colour)
    shot(page, artifacts, "instance")

    # Parent and child link to each other across apps.
    child = children[0]["child"]
    page.locator("[data-testid=children] a").first.click()
    page.wait_for_selector(f'body[data-ready="/instance/payments/{child["id"]}"]')
    parent = page.locator("[data-testid=parent-link]")
    assert parent.inner_text() == f"orders/{world.order}"
    assert [b["app"] for b in page.evaluate("() => window.dashboardTimeline.data.bars")] == ["payments"]
    shot(page, artifacts, "child-instance")
    parent.click()
    page.wait_for_selector(f'body[data-ready="/instance/orders/{world.order}"]')


def test_a_failed_instance_shows_its_failure(world: World, page: Any) -> None:
    open_page(
        page, world.server.url + f"#/instance/orders/{world.broken}", ready=f"/instance/orders/{world.broken}"
    )
    failure = page.locator("[data-testid=failure]").inner_text()
    assert "the warehouse is on fire" in failure
    bars = page.evaluate("() => window.dashboardTimeline.data.bars")
    assert [(b["name"], b["outcome"], b["error"]["errorType"]) for b in bars] == [
        ("explode", "failed", "RuntimeError")
    ]


def test_actions_are_refused_when_not_enabled(world: World, page: Any) -> None:
    open_page(
        page, world.server.url + f"#/instance/orders/{world.waiter}", ready=f"/instance/orders/{world.waiter}"
    )
    assert page.locator("[data-action]").count() == 0
    assert page.locator("[data-testid=read-only]").is_visible()
    # A tampered page sends the request anyway: the server refuses it and nothing changes.
    for action, body in (("terminate", {}), ("suspend", {}), ("raise", {"name": "go", "data": "1"})):
        answer = fetch(
            page, f"api/action?app=orders&id={world.waiter}&action={action}", method="POST", body=body
        )
        assert answer["status"] == 403, answer
        assert "disabled" in answer["body"]["error"]
    state = world.client.get_workflow_state(world.waiter)
    assert state is not None and state.runtime_status == WorkflowStatus.RUNNING


def test_bad_requests_get_a_clear_status(world: World, page: Any) -> None:
    open_page(page, world.server.url, ready="/")
    assert fetch(page, "api/instance?app=orders&id=nope")["status"] == 404
    assert fetch(page, "api/instances?status=SLEEPING")["status"] == 400
    assert fetch(page, "api/instances?page=garbage")["status"] == 400
    assert fetch(page, "api/instances?age=forever")["status"] == 400
    assert fetch(page, f"api/event?app=orders&id={world.order}&seq=x")["status"] == 400
    assert fetch(page, f"api/event?app=orders&id={world.order}&seq=99999")["status"] == 404


def test_the_apps_page_shows_workers_and_work_waiting_without_one(page: Any, artifacts: Path) -> None:
    with DashboardServer(["orders", "payments", "idle"]) as server, running(server):
        idle = DaprWorkflowClient(host=HOST, port=str(server.port("idle")))
        try:
            idle.schedule_new_workflow(w.waiter, instance_id=uid("nobody"))  # no worker of idle
        finally:
            idle.close()
        open_page(page, server.url + "#/apps", ready="/apps")

        def cell(app: str, col: str) -> int:
            return int(
                page.locator(f'[data-testid=apps] tr[data-app="{app}"] [data-col="{col}"]').inner_text()
            )

        assert cell("orders", "workers") >= 1 and cell("payments", "workers") >= 1
        assert cell("idle", "workers") == 0
        assert cell("idle", "waiting") == 1 and cell("idle", "waiting-without-worker") == 1
        assert cell("orders", "waiting-without-worker") == 0
        shot(page, artifacts, "apps")
