"""Dashboard: the timeline of one instance, built from its history (pure, no I/O).

Every activity, timer and child workflow becomes one bar: from the event that
scheduled it to the event that ended it (open while it runs), on the app that ran
it. A task that failed and was scheduled again under the same name is a retry: its
bar carries the attempt number; a timer the SDK made as a retry's back-off says so.
Built on the server so that the page only draws (a 5,000-event history is a few
thousand bars, one pass here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backend._proto import history_events_pb2 as hpb
from backend.dashboard.events import Json, event_app, failure, millis, route


@dataclass
class _Bar:
    kind: str  # activity | timer | child
    name: str
    app: str
    start: int | None
    event_id: int
    end: int | None = None
    outcome: str = "running"  # running | completed | failed | fired | waiting
    attempt: int = 1
    route: str | None = None
    fire_at: int | None = None
    retry_of: str | None = None  # a timer: the back-off before another attempt
    child: Json | None = None
    error: Json | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Json:
        out: Json = {
            "kind": self.kind,
            "name": self.name,
            "app": self.app,
            "start": self.start,
            "end": self.end,
            "outcome": self.outcome,
            "attempt": self.attempt,
            "eventId": self.event_id,
        }
        for key, value in (
            ("route", self.route),
            ("fireAt", self.fire_at),
            ("retryOf", self.retry_of),
            ("child", self.child),
            ("error", self.error),
        ):
            if value is not None:
                out[key] = value
        return out


def _timer_origin(created: hpb.TimerCreatedEvent) -> str | None:
    origin = created.WhichOneof("origin")
    if origin == "activityRetry":
        return "activity"
    if origin == "childWorkflowRetry":
        return "child"
    return None


def build(history: list[hpb.HistoryEvent], instance_app: str, *, now: int) -> Json:
    """{"bars": [...], "apps": [...], "start": ms, "end": ms} for the page to draw."""
    bars: list[_Bar] = []
    open_tasks: dict[int, _Bar] = {}  # activity / child by scheduling eventId
    open_timers: dict[int, _Bar] = {}
    failures_in_a_row: dict[tuple[str, str], int] = {}
    first: int | None = None
    last: int | None = None
    for event in history:
        t = millis(event.timestamp)
        if t is not None:
            first = t if first is None else min(first, t)
            last = t if last is None else max(last, t)
        kind = event.WhichOneof("eventType")
        if kind == "taskScheduled" or kind == "childWorkflowInstanceCreated":
            bar_kind = "activity" if kind == "taskScheduled" else "child"
            body = getattr(event, kind)
            bar = _Bar(
                kind=bar_kind,
                name=body.name,
                app=event_app(event, instance_app),
                start=t,
                event_id=event.eventId,
                route=route(event),
                attempt=1 + failures_in_a_row.get((bar_kind, body.name), 0),
            )
            if bar_kind == "child":
                bar.child = {"app": bar.app, "id": body.instanceId}
            bars.append(bar)
            open_tasks[event.eventId] = bar
        elif kind in (
            "taskCompleted",
            "taskFailed",
            "childWorkflowInstanceCompleted",
            "childWorkflowInstanceFailed",
        ):
            body = getattr(event, kind)
            done = open_tasks.pop(body.taskScheduledId, None)
            if done is None:
                continue
            done.end = t
            failed = kind.endswith("Failed")
            done.outcome = "failed" if failed else "completed"
            streak = (done.kind, done.name)
            if failed:
                done.error = failure(body.failureDetails)
                failures_in_a_row[streak] = failures_in_a_row.get(streak, 0) + 1
            else:
                failures_in_a_row.pop(streak, None)
        elif kind == "timerCreated":
            created = event.timerCreated
            bar = _Bar(
                kind="timer",
                name=created.name if created.HasField("name") else "",
                app=instance_app,
                start=t,
                event_id=event.eventId,
                outcome="waiting",
                fire_at=millis(created.fireAt),
                retry_of=_timer_origin(created),
            )
            bars.append(bar)
            open_timers[event.eventId] = bar
        elif kind == "timerFired":
            timer = open_timers.pop(event.timerFired.timerId, None)
            if timer is not None:
                # TimerFired is stamped when the timer was made (its message waits until
                # fireAt): the bar ends at fireAt.
                timer.end = timer.fire_at or t
                timer.outcome = "fired"
    end = max(last or now, now) if open_tasks or open_timers else (last or now)
    for bar in open_timers.values():
        if bar.fire_at is not None:
            end = max(end, bar.fire_at)
    apps = sorted({b.app for b in bars} | {instance_app})
    return {
        "start": first if first is not None else now,
        "end": end,
        "now": now,
        "apps": apps,
        "bars": [b.json() for b in bars],
    }
