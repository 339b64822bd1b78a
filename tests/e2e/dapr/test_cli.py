"""The real `durabletask-sidecar workflow ...` and `status` commands (subprocesses) against a
server whose workflows a real dapr 1.19 SDK runs: every subcommand and output format, the JSON
and YAML parsed, and the exit codes of errors (unknown instance, server down, permission
denied, a sidecar without the Admin service)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from dapr.ext.workflow import WorkflowStatus

from tests import pki
from tests.e2e.dapr.support import assert_completed, running_runtime, uid, wait_status, workflow_client
from tests.e2e.harness import REPO_ROOT, Server, free_port, wait_until

pytestmark = pytest.mark.timeout(180)

# The installed console script (pip install -e . / tox put it next to the interpreter).
COMMAND = Path(sys.executable).parent / "durabletask-sidecar"
LONG = "x" * 300  # longer than a history row shows without --full


def charge(ctx, amount):
    return f"charged {amount}"


def order_wf(ctx, amount):
    receipt = yield ctx.call_activity("charge", input=amount, app_id="payments")
    return receipt


def waiter_wf(ctx, _):
    value = yield ctx.wait_for_external_event("go")
    return value


def ghost_wf(ctx, _):
    # "ghost" is served but no worker of it ever connects: the activity waits with no worker.
    yield ctx.call_activity("haunt", input=1, app_id="ghost")
    return "never"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DAPR_API_TOKEN", "DAPR_GRPC_ENDPOINT")}
    return subprocess.run(
        [str(COMMAND), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**base, **(env or {})},
        check=False,
    )


def ok(*args: str) -> str:
    done = cli(*args)
    assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
    return done.stdout


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with Server({"orders": None, "payments": None, "ghost": None}) as srv:
        yield srv


@pytest.fixture(scope="module")
def workers(server: Server) -> Iterator[None]:
    with (
        running_runtime(server.port("orders"), workflows=[order_wf, waiter_wf, ghost_wf]),
        running_runtime(server.port("payments"), activities=[charge]),
    ):
        yield


def at(server: Server, app: str = "orders") -> list[str]:
    return ["--address", server.address(app)]


def test_run_list_and_history_in_every_format(server: Server, workers: None) -> None:
    iid = uid("order")
    out = ok("workflow", "run", "order_wf", "-i", iid, "--input", json.dumps(LONG), *at(server))
    assert out.strip() == f"Workflow instance started successfully: {iid}"
    with workflow_client(server.port("orders")) as client:
        assert assert_completed(client, iid) == f"charged {LONG}"

    rows = json.loads(ok("workflow", "list", "-o", "json", "-w", "order_wf", *at(server)))
    mine = next(r for r in rows if r["instanceID"] == iid)
    assert mine["appID"] == "orders" and mine["name"] == "order_wf" and mine["runtimeStatus"] == "COMPLETED"
    assert mine["created"].endswith("Z") and mine["lastUpdate"]
    as_yaml = yaml.safe_load(ok("workflow", "list", "-o", "yaml", "-w", "order_wf", *at(server)))
    assert as_yaml == rows
    short = ok("workflow", "list", "-w", "order_wf", *at(server))
    assert short.splitlines()[0].split() == ["APP", "ID", "NAME", "ID", "STATUS", "CUSTOM", "STATUS", "AGE"]
    assert iid in short and "COMPLETED" in short
    wide = ok("workflow", "list", "-o", "wide", "-w", "order_wf", *at(server))
    assert "LAST UPDATE" in wide.splitlines()[0] and iid in wide

    # Filters: status, max age, app, name; an empty result is [] (and a note on stderr for tables).
    completed = json.loads(ok("workflow", "list", "-o", "json", "-s", "COMPLETED", "-m", "1h", *at(server)))
    assert iid in {r["instanceID"] for r in completed}
    assert (
        json.loads(ok("workflow", "list", "-o", "json", "-s", "RUNNING", "-w", "order_wf", *at(server))) == []
    )
    assert json.loads(ok("workflow", "list", "-o", "json", "-a", "payments", *at(server))) == []
    empty = cli("workflow", "list", "-w", "no-such-workflow", *at(server))
    assert empty.returncode == 0 and empty.stdout == "" and "No workflow found" in empty.stderr
    old = json.loads(ok("workflow", "list", "-o", "json", "-m", "2020-01-02", "-w", "order_wf", *at(server)))
    assert iid in {r["instanceID"] for r in old}

    events = json.loads(ok("workflow", "history", iid, "-o", "json", *at(server)))
    types = [e["type"] for e in events]
    assert events[0]["elapsed"].startswith("Age:")  # the first is relative to now, the rest to the previous
    assert {"ExecutionStarted", "TaskScheduled", "TaskCompleted", "ExecutionCompleted"} <= set(types)
    scheduled = next(e for e in events if e["type"] == "TaskScheduled")
    assert scheduled["app"] == "payments" and scheduled["name"] == "charge"  # where it ran
    started = next(e for e in events if e["type"] == "ExecutionStarted")
    assert started["app"] == "orders" and not started["elapsed"].startswith("Age:")
    assert started["attrs"]["input"].endswith("…") and len(started["attrs"]["input"]) <= 120
    full = json.loads(ok("workflow", "history", iid, "-o", "json", "--full", *at(server)))
    assert next(e for e in full if e["type"] == "ExecutionStarted")["attrs"]["input"] == LONG
    assert (
        yaml.safe_load(ok("workflow", "history", iid, "-o", "yaml", "--full", *at(server)))[0]["type"]
        == types[0]
    )
    table = ok("workflow", "history", iid, *at(server))
    assert table.splitlines()[0].split()[:4] == ["TYPE", "NAME", "EVENTID", "APP"]
    assert "TaskScheduled" in table and "payments" in table
    wide = ok("workflow", "history", iid, "-o", "wide", *at(server))
    assert "ATTRS" in wide.splitlines()[0] and "orders->payments" in wide


def test_lifecycle_commands(server: Server, workers: None) -> None:
    with workflow_client(server.port("orders")) as client:
        iid = uid("wait")
        ok("workflow", "run", "waiter_wf", "-i", iid, *at(server))
        wait_status(client, iid, WorkflowStatus.RUNNING)
        assert "suspended successfully" in ok(
            "workflow", "suspend", iid, "--reason", "maintenance", *at(server)
        )
        wait_status(client, iid, WorkflowStatus.SUSPENDED)
        assert "resumed successfully" in ok("workflow", "resume", iid, *at(server))
        wait_status(client, iid, WorkflowStatus.RUNNING)
        assert "raised event 'go'" in ok(
            "workflow", "raise-event", f"{iid}/go", "--input", '"hello"', *at(server)
        )
        assert assert_completed(client, iid) == "hello"
        events = json.loads(ok("workflow", "history", iid, "-o", "json", *at(server)))
        assert {"ExecutionSuspended", "ExecutionResumed", "EventRaised"} <= {e["type"] for e in events}

        # Rerun from the activity's event of a finished order: the activity runs again.
        order = uid("order")
        ok("workflow", "run", "order_wf", "-i", order, "-x", "5", *at(server))
        assert assert_completed(client, order) == "charged 5"
        again = uid("rerun")
        history = json.loads(ok("workflow", "history", order, "-o", "json", *at(server)))
        task = next(e["eventId"] for e in history if e["type"] == "TaskScheduled")
        out = ok("workflow", "rerun", order, "-e", str(task), "--new-instance-id", again, *at(server))
        assert out.strip() == f"Rerunning workflow instance: {again}"
        assert assert_completed(client, again) == "charged 5"

        doomed = uid("term")
        ok("workflow", "run", "waiter_wf", "-i", doomed, *at(server))
        wait_status(client, doomed, WorkflowStatus.RUNNING)
        assert "terminated successfully" in ok(
            "workflow", "terminate", doomed, "-o", '"stopped"', *at(server)
        )
        state = wait_status(client, doomed, WorkflowStatus.TERMINATED)
        assert json.loads(state.serialized_output) == "stopped"

        # A running instance is not purged without --force; a finished one is.
        live = uid("live")
        ok("workflow", "run", "waiter_wf", "-i", live, *at(server))
        wait_status(client, live, WorkflowStatus.RUNNING)
        refused = cli("workflow", "purge", live, *at(server))
        assert refused.returncode == 1 and "FAILED_PRECONDITION" in refused.stderr
        assert "purged successfully" in ok("workflow", "purge", doomed, *at(server))
        assert client.get_workflow_state(doomed) is None
        assert cli("workflow", "history", doomed, *at(server)).returncode == 3
        ok("workflow", "terminate", live, *at(server))
        wait_status(client, live, WorkflowStatus.TERMINATED)
        purged = ok(
            "workflow", "purge", "--all-older-than", "0s", "--all-filter-status", "TERMINATED", *at(server)
        )
        assert purged.startswith("Purged ") and int(purged.split()[1]) >= 1
        assert client.get_workflow_state(live) is None
        assert ok("workflow", "purge", "--all", *at(server)).startswith("Purged ")
        assert client.get_workflow_state(iid) is None  # completed: purged by --all


def test_status_shows_workers_and_work_waiting_without_one(server: Server, workers: None) -> None:
    iid = uid("ghost")
    ok("workflow", "run", "ghost_wf", "-i", iid, *at(server))

    def ghost_waiting() -> dict[str, Any] | None:
        apps = {a["appID"]: a for a in json.loads(ok("status", "-o", "json", *at(server)))}
        ghost = apps.get("ghost")
        return apps if ghost and ghost["waitingWithoutWorker"] >= 1 else None

    apps = wait_until(ghost_waiting, timeout=60, message="the ghost activity to wait")
    ghost = apps["ghost"]
    assert ghost["served"] and ghost["workers"] == 0 and ghost["waiting"] >= 1
    assert ghost["oldestWaitingSince"] is not None and ghost["oldestWaitingSeconds"] >= 0
    assert apps["orders"]["workers"] >= 1 and apps["payments"]["workers"] >= 1
    assert apps["orders"]["instances"].get("RUNNING", 0) >= 1
    assert yaml.safe_load(ok("status", "-o", "yaml", "-a", "ghost", *at(server)))[0]["appID"] == "ghost"
    short = ok("status", *at(server))
    assert short.splitlines()[0].split()[:4] == ["APP", "ID", "SERVED", "WORKERS"]
    assert "ghost" in short and "RUNNING=" in short
    wide = ok("status", "-o", "wide", *at(server))
    assert "TERMINATED" in wide.splitlines()[0] and "ghost" in wide
    ok("workflow", "terminate", iid, *at(server))


def test_errors_have_stable_exit_codes(server: Server, workers: None) -> None:
    for args in (
        ("workflow", "suspend", "no-such-instance"),
        ("workflow", "resume", "no-such-instance"),
        ("workflow", "terminate", "no-such-instance"),
        ("workflow", "raise-event", "no-such-instance/go"),
        ("workflow", "history", "no-such-instance"),
        ("workflow", "purge", "no-such-instance"),
        ("workflow", "rerun", "no-such-instance"),
    ):
        done = cli(*args, *at(server))
        assert done.returncode == 3, (args, done.stdout, done.stderr)
        assert "no-such-instance" in done.stderr
    bad = cli("workflow", "run", "order_wf", "--input", "{not json", *at(server))
    assert bad.returncode == 2 and "JSON" in bad.stderr
    assert cli("workflow", "raise-event", "missing-slash", *at(server)).returncode == 2
    assert cli("workflow", "list", "-s", "NOPE", *at(server)).returncode == 2  # argparse
    assert cli("workflow", "list", "-m", "yesterday-ish", *at(server)).returncode == 2
    down = cli("workflow", "list", "--address", f"127.0.0.1:{free_port()}", "--timeout", "3")
    assert down.returncode == 5 and "cannot reach" in down.stderr
    down = cli("workflow", "suspend", "x", "--address", f"127.0.0.1:{free_port()}", "--timeout", "3")
    assert down.returncode == 5


@pytest.fixture
def bare_grpc() -> Iterator[str]:
    """A gRPC server with no services: a sidecar without our Admin service answers UNIMPLEMENTED."""
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        srv.stop(0)


def test_list_and_status_say_when_the_sidecar_has_no_admin_service(bare_grpc: str) -> None:
    for args in (("workflow", "list"), ("status",)):
        done = cli(*args, "--address", bare_grpc)
        assert done.returncode == 6, (args, done.stderr)
        assert "Admin service" in done.stderr


def test_permissions_follow_the_callers_credentials(tmp_path: Path) -> None:
    tokens = {
        "orders": "orders-cli-token-1",
        "payments": "payments-cli-token-2",
        "admin": "operator-cli-token-3",
    }
    for name, value in tokens.items():
        (tmp_path / name).write_text(value)
    args = [
        "--app-token-file",
        f"orders={tmp_path / 'orders'}",
        "--app-token-file",
        f"payments={tmp_path / 'payments'}",
        "--admin-token-file",
        str(tmp_path / "admin"),
    ]
    with Server({"orders": None, "payments": None}, extra_args=args) as srv:
        orders = ["--address", srv.address("orders"), "--api-token-file", str(tmp_path / "orders")]
        iid = uid("perm")
        ok("workflow", "run", "order_wf", "-i", iid, *orders)
        mine = json.loads(ok("workflow", "list", "-o", "json", *orders))
        assert {r["appID"] for r in mine} == {"orders"}
        denied = cli("workflow", "list", "-a", "payments", *orders)
        assert denied.returncode == 4 and "PERMISSION_DENIED" in denied.stderr
        assert cli("status", "-a", "payments", *orders).returncode == 4
        anonymous = cli("workflow", "list", "--address", srv.address("orders"))
        assert anonymous.returncode == 4 and "UNAUTHENTICATED" in anonymous.stderr
        via_env = cli(
            "workflow",
            "list",
            "-o",
            "json",
            "--address",
            srv.address("orders"),
            env={"DAPR_API_TOKEN": tokens["orders"]},
        )
        assert via_env.returncode == 0 and {r["appID"] for r in json.loads(via_env.stdout)} == {"orders"}
        operator = ["--address", srv.address("orders"), "--admin-token-file", str(tmp_path / "admin")]
        apps = {a["appID"] for a in json.loads(ok("status", "-o", "json", *operator))}
        assert apps == {"orders", "payments"}
        assert iid in {r["instanceID"] for r in json.loads(ok("workflow", "list", "-o", "json", *operator))}
        # The operator token is not an app's: lifecycle calls with it are refused.
        assert cli("workflow", "suspend", iid, *operator).returncode == 4


def test_mtls_and_paging_flags(tmp_path: Path) -> None:
    ca = pki.CA(tmp_path / "pki")
    server_pair, client = ca.server(), ca.client("orders")
    args = [
        "--tls-cert",
        str(server_pair.cert),
        "--tls-key",
        str(server_pair.key),
        "--tls-client-ca",
        str(ca.cert),
    ]
    with Server({"orders": None}, extra_args=args) as srv:
        tls = ["--address", f"https://localhost:{srv.port('orders')}", "--tls-ca", str(ca.cert)]
        mtls = [*tls, "--tls-cert", str(client.cert), "--tls-key", str(client.key)]
        ids = [uid("tls") for _ in range(3)]
        for iid in ids:
            ok("workflow", "run", "order_wf", "-i", iid, *mtls)
        listed = json.loads(ok("workflow", "list", "-o", "json", *mtls))
        assert {r["instanceID"] for r in listed} == set(ids) and {r["appID"] for r in listed} == {"orders"}
        # --limit cuts the listing and says how to go on; --page-token goes on from there.
        first = cli("workflow", "list", "-o", "json", "--limit", "2", *mtls)
        assert first.returncode == 0 and len(json.loads(first.stdout)) == 2
        token = first.stderr.strip().rsplit(" ", 1)[-1]
        rest = json.loads(ok("workflow", "list", "-o", "json", "--page-token", token, *mtls))
        assert [r["instanceID"] for r in json.loads(first.stdout) + rest] == [r["instanceID"] for r in listed]
        # No client certificate: the handshake is refused. A CA we do not trust: likewise.
        assert cli("workflow", "list", *tls, "--timeout", "5").returncode == 5
        other = pki.CA(tmp_path / "other", name="other-ca")
        wrong = ["--address", f"https://localhost:{srv.port('orders')}", "--tls-ca", str(other.cert)]
        assert (
            cli(
                "workflow",
                "list",
                *wrong,
                "--tls-cert",
                str(client.cert),
                "--tls-key",
                str(client.key),
                "--timeout",
                "5",
            ).returncode
            == 5
        )
