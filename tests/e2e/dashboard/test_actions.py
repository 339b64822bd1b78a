"""Dashboard actions with --dashboard-actions, behind the same credentials as the HTTP API: a
server-wide token (DAPR_API_TOKEN for the SDK, the `dapr-api-token` header for the page).
Without the token the page and its actions are refused; with it, suspend, resume, raise event,
terminate, purge and rerun change the instances the dapr 1.19 SDK made."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dapr.conf import settings
from dapr.ext.workflow import DaprWorkflowClient, WorkflowStatus

from tests.e2e.dapr.support import uid, wait_status
from tests.e2e.dashboard import workflows as w
from tests.e2e.dashboard.support import DashboardServer, fetch, open_page, shot
from tests.e2e.dashboard.test_pages import running

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DashboardServer, DaprWorkflowClient, str]]:
    """A server with a server-wide token (the SDK sends it, from DAPR_API_TOKEN's setting) and
    an operator's token (--admin-token-file), which the page sends; actions enabled. The HTTP
    listener serves every app."""
    folder = tmp_path_factory.mktemp("tokens")
    tokens = {}
    for name in ("api", "admin"):
        tokens[name] = secrets.token_urlsafe(24)
        (folder / name).write_text(tokens[name])
        (folder / name).chmod(0o600)
    before = settings.DAPR_API_TOKEN
    settings.DAPR_API_TOKEN = tokens["api"]
    try:
        server = DashboardServer(
            ["orders", "payments"],
            actions=True,
            extra_args=["--api-token-file", str(folder / "api"), "--admin-token-file", str(folder / "admin")],
        )
        with server, running(server) as client:
            server.api_token = tokens["api"]  # type: ignore[attr-defined]
            yield server, client, tokens["admin"]
    finally:
        settings.DAPR_API_TOKEN = before


def with_token(page: Any, server: DashboardServer, token: str, hash_: str, ready: str) -> None:
    """Open the page as a person who entered the token (the Token button keeps it in sessionStorage)."""
    page.add_init_script(
        f"if (location.protocol === 'http:') sessionStorage.setItem('dashboard-api-token', {json.dumps(token)})"
    )
    open_page(page, server.url + hash_, ready=ready)


def status(client: DaprWorkflowClient, instance_id: str) -> WorkflowStatus:
    state = client.get_workflow_state(instance_id)
    assert state is not None
    return state.runtime_status


def test_without_the_token_the_dashboard_is_refused(secured: Any, page: Any, artifacts: Path) -> None:
    server, client, _ = secured
    waiter = client.schedule_new_workflow(w.waiter, instance_id=uid("waiter"))
    wait_status(client, waiter, WorkflowStatus.RUNNING)
    open_page(page, server.url, ready="error")
    assert "API token" in page.locator("[role=alert]").inner_text()
    assert fetch(page, "api/instances")["status"] == 401
    answer = fetch(page, f"api/action?app=orders&id={waiter}&action=terminate", method="POST", body={})
    assert answer["status"] == 401
    assert fetch(page, "api/instances", token="not-the-token")["status"] == 401
    # The server-wide token is an operator's too: it already acts as each app on its listener.
    seen = fetch(page, "api/instances", token=server.api_token)
    assert seen["status"] == 200 and waiter in [i["id"] for i in seen["body"]["instances"]]
    assert status(client, waiter) == WorkflowStatus.RUNNING
    shot(page, artifacts, "refused-without-token")


def test_actions_change_the_instance(secured: Any, page: Any, artifacts: Path) -> None:
    server, client, token = secured
    waiter = client.schedule_new_workflow(w.waiter, instance_id=uid("waiter"))
    wait_status(client, waiter, WorkflowStatus.RUNNING)
    ready = f"/instance/orders/{waiter}"
    with_token(page, server, token, f"#/instance/orders/{waiter}", ready)
    assert page.locator("#mode").inner_text() == "actions enabled"

    def act(action: str, expect: str) -> None:
        page.evaluate("() => { delete document.body.dataset.ready; }")
        page.locator(f'[data-action="{action}"]').click()
        page.wait_for_selector(
            f'body[data-ready="{ready}"] [data-testid=instance-status] [data-status="{expect}"]'
        )

    act("suspend", "SUSPENDED")
    assert status(client, waiter) == WorkflowStatus.SUSPENDED
    shot(page, artifacts, "suspended")
    act("resume", "RUNNING")
    assert status(client, waiter) == WorkflowStatus.RUNNING
    page.locator("[data-testid=event-name]").fill("go")
    page.locator("[data-testid=event-data]").fill('"from the dashboard"')
    page.locator('[data-action="raise"]').click()
    done = client.wait_for_workflow_completion(waiter, timeout_in_seconds=30)
    assert done is not None and done.runtime_status == WorkflowStatus.COMPLETED
    assert done.serialized_output == '{"got": "from the dashboard"}'

    # Terminate (confirmed in a dialog), then purge: the instance is gone.
    other = client.schedule_new_workflow(w.waiter, instance_id=uid("doomed"))
    wait_status(client, other, WorkflowStatus.RUNNING)
    ready = f"/instance/orders/{other}"
    with_token(page, server, token, f"#/instance/orders/{other}", ready)
    page.on("dialog", lambda dialog: dialog.accept())
    act("terminate", "TERMINATED")
    assert status(client, other) == WorkflowStatus.TERMINATED
    page.evaluate("() => { delete document.body.dataset.ready; }")
    page.locator('[data-action="purge"]').click()
    page.wait_for_selector('body[data-ready="/"]')
    assert client.get_workflow_state(other) is None


def test_rerun_from_the_dashboard_starts_a_new_instance(secured: Any, page: Any) -> None:
    server, client, token = secured
    order = client.schedule_new_workflow(w.order, input=7, instance_id=uid("order"))
    assert (
        client.wait_for_workflow_completion(order, timeout_in_seconds=60).runtime_status
        == WorkflowStatus.COMPLETED
    )
    with_token(page, server, token, f"#/instance/orders/{order}", f"/instance/orders/{order}")
    page.on("dialog", lambda dialog: dialog.accept())
    # The toolbar's rerun: the whole workflow again, as a new instance the page then shows.
    page.evaluate("() => { delete document.body.dataset.ready; }")
    page.locator('[data-action="rerun"]').click()
    page.wait_for_function(
        f"() => (document.body.dataset.ready || '').startsWith('/instance/orders/') && document.body.dataset.ready !== '/instance/orders/{order}'"
    )
    new_id = page.evaluate("() => document.body.dataset.ready").split("/")[-1]
    rerun = client.wait_for_workflow_completion(new_id, timeout_in_seconds=60)
    assert rerun is not None and rerun.runtime_status == WorkflowStatus.COMPLETED
    assert rerun.serialized_output == client.get_workflow_state(order).serialized_output
    # From one event (the SDK's own event ID of the timer), through the JSON endpoint.
    timer = next(e for e in client.get_workflow_history(order) if e.event_type.value == "timerCreated")
    answer = fetch(
        page,
        f"api/action?app=orders&id={order}&action=rerun",
        method="POST",
        body={"eventId": timer.event_id},
        token=token,
    )
    assert answer["status"] == 200, answer
    again = client.wait_for_workflow_completion(answer["body"]["instance"]["id"], timeout_in_seconds=60)
    assert again is not None and again.runtime_status == WorkflowStatus.COMPLETED

    # Bad action input is a clear 400/404, never a 500.
    def post(action: str, body: Any, instance: str = order) -> int:
        return fetch(
            page,
            f"api/action?app=orders&id={instance}&action={action}",
            method="POST",
            body=body,
            token=token,
        )["status"]

    assert post("explode", {}) == 404
    assert post("raise", {}) == 400
    assert post("rerun", {"eventId": "one"}) == 400
    assert post("rerun", {"eventId": 9999}) == 404
    assert post("suspend", {}, instance="missing") == 404
    assert post("purge", {}, instance=order) == 200  # finished: purged
    assert client.get_workflow_state(order) is None


def test_an_apps_own_token_sees_and_acts_on_that_app_only(tmp_path: Path, page: Any) -> None:
    tokens = {app: secrets.token_urlsafe(24) for app in ("orders", "payments")}
    for app, token in tokens.items():
        (tmp_path / app).write_text(token)
        (tmp_path / app).chmod(0o600)
    args = [f"--app-token-file={app}={tmp_path / app}" for app in tokens]
    before = settings.DAPR_API_TOKEN
    try:
        with DashboardServer(["orders", "payments"], actions=True, extra_args=args) as server:
            made = {}
            for app, workflow in (("orders", w.waiter), ("payments", w.refund)):
                settings.DAPR_API_TOKEN = tokens[app]  # each client carries its own app's token
                client = DaprWorkflowClient(host="127.0.0.1", port=str(server.port(app)))
                made[app] = client.schedule_new_workflow(workflow, input=1, instance_id=uid(app))
                client.close()
            with_token(page, server, tokens["orders"], "#/", "/")
            listed = [tr.get_attribute("data-instance") for tr in page.locator("tr[data-instance]").all()]
            assert listed == [made["orders"]]  # payments' instance is not shown to orders
            assert (
                fetch(page, f"api/instance?app=payments&id={made['payments']}", token=tokens["orders"])[
                    "status"
                ]
                == 403
            )
            answer = fetch(
                page,
                f"api/action?app=payments&id={made['payments']}&action=terminate",
                method="POST",
                body={},
                token=tokens["orders"],
            )
            assert answer["status"] == 403
            mine = fetch(
                page,
                f"api/action?app=orders&id={made['orders']}&action=terminate",
                method="POST",
                body={},
                token=tokens["orders"],
            )
            assert mine["status"] == 200, mine
            state = fetch(page, f"api/instance?app=orders&id={made['orders']}", token=tokens["orders"])[
                "body"
            ]
            assert state["status"] == "TERMINATED"
    finally:
        settings.DAPR_API_TOKEN = before
