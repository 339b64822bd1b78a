"""The dashboard's pure parts: a history becomes timeline bars (one per activity, timer and
child workflow, on the app that ran it, failures and retries marked) and table rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2, wrappers_pb2

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend.dashboard import events, timeline

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def ts(ms: int) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(T0 + timedelta(milliseconds=ms))
    return out


def ev(
    ms: int, event_id: int = -1, router: tuple[str, str] | None = None, **body: object
) -> hpb.HistoryEvent:
    e = hpb.HistoryEvent(eventId=event_id, timestamp=ts(ms), **body)
    if router is not None:
        e.router.CopyFrom(opb.TaskRouter(sourceAppID=router[0], targetAppID=router[1]))
    return e


def failed(task: int) -> hpb.TaskFailedEvent:
    return hpb.TaskFailedEvent(
        taskScheduledId=task, failureDetails=opb.TaskFailureDetails(errorType="E", errorMessage="no")
    )


HISTORY = [
    ev(0, executionStarted=hpb.ExecutionStartedEvent(name="order")),
    ev(1, 1, ("orders", "payments"), taskScheduled=hpb.TaskScheduledEvent(name="charge")),
    ev(5, router=("orders", "payments"), taskCompleted=hpb.TaskCompletedEvent(taskScheduledId=1)),
    ev(6, 2, taskScheduled=hpb.TaskScheduledEvent(name="flaky")),
    ev(8, taskFailed=failed(2)),
    ev(9, 3, timerCreated=hpb.TimerCreatedEvent(fireAt=ts(20), activityRetry=hpb.TimerOriginActivityRetry())),
    ev(9, timerFired=hpb.TimerFiredEvent(fireAt=ts(20), timerId=3)),
    ev(21, 4, taskScheduled=hpb.TaskScheduledEvent(name="flaky")),
    ev(22, taskCompleted=hpb.TaskCompletedEvent(taskScheduledId=4)),
    ev(
        23,
        5,
        ("orders", "payments"),
        childWorkflowInstanceCreated=hpb.ChildWorkflowInstanceCreatedEvent(instanceId="o:5", name="refund"),
    ),
    ev(30, 6, taskScheduled=hpb.TaskScheduledEvent(name="ship")),
]


def test_one_bar_per_task_on_the_app_that_ran_it() -> None:
    built = timeline.build(HISTORY, "orders", now=int((T0 + timedelta(milliseconds=100)).timestamp() * 1000))
    bars = [(b["kind"], b["name"], b["app"], b["outcome"], b["attempt"]) for b in built["bars"]]
    assert bars == [
        ("activity", "charge", "payments", "completed", 1),
        ("activity", "flaky", "orders", "failed", 1),
        ("timer", "", "orders", "fired", 1),
        ("activity", "flaky", "orders", "completed", 2),
        ("child", "refund", "payments", "running", 1),
        ("activity", "ship", "orders", "running", 1),
    ]
    assert built["apps"] == ["orders", "payments"]
    by_name = {b["name"]: b for b in built["bars"]}
    assert by_name["charge"]["route"] == "orders -> payments"
    assert by_name["charge"]["end"] - by_name["charge"]["start"] == 4
    assert by_name[""]["retryOf"] == "activity" and by_name[""]["end"] == by_name[""]["fireAt"]
    assert by_name["refund"]["child"] == {"app": "payments", "id": "o:5"}
    assert built["bars"][1]["error"]["errorType"] == "E"
    assert built["end"] == built["now"]  # open tasks reach to now


def test_a_success_resets_the_retry_count() -> None:
    history = [
        ev(1, 1, taskScheduled=hpb.TaskScheduledEvent(name="a")),
        ev(2, taskFailed=failed(1)),
        ev(3, 2, taskScheduled=hpb.TaskScheduledEvent(name="a")),
        ev(4, taskCompleted=hpb.TaskCompletedEvent(taskScheduledId=2)),
        ev(5, 3, taskScheduled=hpb.TaskScheduledEvent(name="a")),
    ]
    assert [b["attempt"] for b in timeline.build(history, "x", now=0)["bars"]] == [1, 2, 1]


def test_rows_name_results_after_their_task_and_cut_payloads() -> None:
    names = {1: "charge"}
    done = ev(
        5,
        router=("orders", "payments"),
        taskCompleted=hpb.TaskCompletedEvent(
            taskScheduledId=1, result=wrappers_pb2.StringValue(value="x" * 2000)
        ),
    )
    row = events.row(2, done, "orders", names)
    assert row["name"] == "charge" and row["app"] == "payments" and row["route"] == "orders -> payments"
    assert row["truncated"] and len(row["payload"]) == events.PREVIEW_CHARS
    child_done = ev(
        9,
        router=("payments", "orders"),
        childWorkflowInstanceCompleted=hpb.ChildWorkflowInstanceCompletedEvent(taskScheduledId=5),
    )
    assert events.row(3, child_done, "orders")["app"] == "payments"  # the child's own result


def _config(*argv: str):  # type: ignore[no-untyped-def]
    from backend.cli import build_parser, config_from

    return config_from(build_parser().parse_args(["serve", *argv]), env={})


def test_dashboard_actions_are_off_unless_asked_for(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert _config().dashboard_actions is False
    assert _config("--dashboard-actions").dashboard_actions is True
    path = tmp_path / "d.toml"
    path.write_text("dashboard_actions = true\n")
    assert _config("--config", str(path)).dashboard_actions is True
