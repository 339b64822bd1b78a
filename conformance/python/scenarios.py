"""The scenarios (see conformance/scenarios/*/README.md), written once against the adapter.

A scenario names the workflows and activities each app ID hosts and a `drive` step: the client
side, which starts instances, observes them (facts) and waits for them to finish.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from adapter import Api, State

Fn = Callable[..., Any]
POLL = 0.1  # seconds between two reads of an instance's state


class Run:
    """One scenario run: the workers it started, its clients, the instances and facts it reports."""

    def __init__(self, api: Api, scenario: Scenario, name: str, apps: dict[str, str], run_id: str) -> None:
        self.api, self.scenario, self.apps = api, scenario, apps
        self.iid = f"{run_id}-{name}"
        self.instances: dict[str, str] = {"main": self.iid}
        self.facts: dict[str, Any] = {}
        self.workers: list[Any] = []
        self._clients: dict[str, Any] = {}

    def host(self, app: str) -> None:
        workflows, activities = self.scenario.apps[app]
        self.workers.append(self.api.worker(app, self.apps[app], workflows, activities))

    def client(self, app: str = "main") -> Any:
        if app not in self._clients:
            self._clients[app] = self.api.client(app, self.apps[app])
        return self._clients[app]

    def finish(self, iid: str, app: str = "main") -> State:
        state = self.api.wait(self.client(app), iid)
        if state is None:
            raise RuntimeError(f"instance {iid} vanished while waiting")
        return state

    def until(self, iid: str, *statuses: str, timeout: float = 30.0) -> bool:
        """Polls until the client reads one of `statuses`; False if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.api.state(self.client(), iid)
            if state is not None and state.status in statuses:
                return True
            time.sleep(POLL)
        return False

    def close(self) -> None:
        for w in self.workers:
            try:
                self.api.stop(w)
            except Exception as err:
                print(f"stopping a worker failed: {err}", file=sys.stderr)
        for c in self._clients.values():
            close = getattr(c, "close", None)  # dapr's DaprWorkflowClient before 1.18 has none
            if close is not None:
                close()


@dataclass
class Scenario:
    apps: dict[str, tuple[dict[str, Fn], dict[str, Fn]]]  # app -> (workflows, activities)
    drive: Callable[[Run], None]
    hosted: tuple[str, ...] | None = None  # apps whose workers start before `drive`; None: all


def scenarios(api: Api) -> dict[str, Scenario]:
    attempts: Counter[str] = Counter()
    lock = threading.Lock()

    def count(key: str) -> int:
        with lock:
            attempts[key] += 1
            return attempts[key]

    def wait_event(ctx: Any, name: str) -> Any:
        return ctx.wait_for_external_event(name)

    # -- activities ------------------------------------------------------------------------
    def say_hello(ctx: Any, name: str) -> str:
        return f"Hello {name}!"

    def square(ctx: Any, x: int) -> int:
        return x * x

    def flaky(ctx: Any, _: Any) -> str:
        # Counted per instance: the SDKs name the activity context's instance differently.
        n = count(str(getattr(ctx, "workflow_id", None) or getattr(ctx, "orchestration_id", "")))
        if n < 3:
            raise RuntimeError(f"attempt {n} failed")
        return "ok"

    def child_attempt(ctx: Any, _: Any) -> str:
        # Counted per harness process, not per instance: each retry is a new child instance.
        n = count("child_attempt")
        if n < 3:
            raise RuntimeError(f"attempt {n} failed")
        return "ok"

    def boom(ctx: Any, _: Any) -> None:
        raise RuntimeError("kaboom")

    def remote_echo(ctx: Any, s: str) -> str:
        return f"remote:{s}"

    # -- workflows ---------------------------------------------------------------------------
    def hello_chain(ctx: Any, _: Any) -> Any:
        out = []
        for city in ("Tokyo", "Seattle", "London"):
            out.append((yield api.activity(ctx, "say_hello", city)))
        return out

    def fan_out_fan_in(ctx: Any, n: int) -> Any:
        results = yield api.when_all([api.activity(ctx, "square", i) for i in range(n)])
        return sum(results)

    def durable_timer(ctx: Any, _: Any) -> Any:
        yield ctx.create_timer(timedelta(seconds=1))
        return "done"

    def external_event(ctx: Any, _: Any) -> Any:
        approval = wait_event(ctx, "approval")
        timeout = ctx.create_timer(timedelta(seconds=60))
        winner = yield api.when_any([approval, timeout])
        return approval.get_result() if winner == approval else "timeout"

    def event_timeout(ctx: Any, _: Any) -> Any:
        never = wait_event(ctx, "never")
        winner = yield api.when_any([never, ctx.create_timer(timedelta(seconds=1))])
        return never.get_result() if winner == never else "timeout"

    def activity_retry(ctx: Any, _: Any) -> Any:
        return (yield api.activity(ctx, "flaky", None, retry=api.retry()))

    def child_workflow(ctx: Any, x: int) -> Any:
        return (yield api.activity(ctx, "square", x))

    def parent_workflow(ctx: Any, x: int) -> Any:
        r = yield api.child(ctx, "child_workflow", x)
        return r + 1

    def failing_workflow(ctx: Any, _: Any) -> Any:
        yield api.activity(ctx, "boom")
        return "unreachable"

    def cross_app_activity(ctx: Any, _: Any) -> Any:
        return (yield api.activity(ctx, "remote_echo", "ping", app="remote"))

    def remote_child(ctx: Any, s: str) -> Any:
        return (yield api.activity(ctx, "remote_echo", s))

    def cross_app_child(ctx: Any, _: Any) -> Any:
        return (yield api.child(ctx, "remote_child", "child", app="remote"))

    def suspend_resume(ctx: Any, _: Any) -> Any:
        return "approved:" + (yield wait_event(ctx, "approval"))

    def terminate_parent(ctx: Any, _: Any) -> Any:
        return (yield api.child(ctx, "terminate_child", iid=f"{ctx.instance_id}-child"))

    def terminate_child(ctx: Any, _: Any) -> Any:
        return (yield wait_event(ctx, "never"))

    def purge_parent(ctx: Any, _: Any) -> Any:
        return (yield api.child(ctx, "purge_child", iid=f"{ctx.instance_id}-child"))

    def purge_child(ctx: Any, _: Any) -> Any:
        return "child-done"

    def custom_status(ctx: Any, _: Any) -> Any:
        # The SDKs take an already serialized custom status (a non-str is deprecated).
        ctx.set_custom_status(json.dumps("step-1"))
        yield wait_event(ctx, "next")
        ctx.set_custom_status(json.dumps({"stage": "done", "progress": 100}))
        return "ok"

    def scheduled_start(ctx: Any, _: Any) -> Any:
        return "started"

    def reuse(ctx: Any, data: str) -> Any:
        return f"{data}:{(yield wait_event(ctx, 'finish'))}"

    def noop(ctx: Any, data: Any) -> Any:
        return data

    def history_chain(ctx: Any, _: Any) -> Any:
        return [(yield api.activity(ctx, "say_hello", "A")), (yield api.activity(ctx, "say_hello", "B"))]

    def continue_as_new(ctx: Any, generation: int) -> Any:
        if generation == 0:
            yield wait_event(ctx, "start")
            ctx.continue_as_new(1, save_events=True)
            return None
        if generation == 1:
            ctx.continue_as_new(2, save_events=True)
            return None
        return {"generation": generation, "go": (yield wait_event(ctx, "go"))}

    def flaky_child(ctx: Any, _: Any) -> Any:
        return (yield api.activity(ctx, "child_attempt"))

    def child_retry_parent(ctx: Any, _: Any) -> Any:
        return (yield api.child(ctx, "flaky_child", retry=api.retry(first_ms=200, attempts=3)))

    def late_target(ctx: Any, _: Any) -> Any:
        return (yield api.activity(ctx, "remote_echo", "late", app="remote"))

    def missing_activity(ctx: Any, _: Any) -> Any:
        try:
            yield api.activity(ctx, "not_registered", app="remote")
        except api.task_failed:
            return "caught"
        return "not failed"

    # -- the ML pipeline, across app1..app4 ------------------------------------------------------
    def ingest_data(ctx: Any, data: dict[str, Any]) -> Any:
        return {"dataset": data["dataset"], "rows": 150}

    def engineer_features(ctx: Any, data: dict[str, Any]) -> Any:
        return {**data, "features": 4}

    def fit_model(ctx: Any, f: dict[str, Any]) -> Any:
        return f"model-{f['dataset']}-{f['rows']}x{f['features']}"

    def evaluate_model(ctx: Any, model: str) -> Any:
        return 0.97

    def load_model(ctx: Any, model: str) -> Any:
        return f"loaded:{model}"

    def setup_inference(ctx: Any, model: str) -> Any:
        return f"https://inference.local/{model}"

    def train_model(ctx: Any, features: dict[str, Any]) -> Any:
        model = yield api.activity(ctx, "fit_model", features)
        accuracy = yield api.activity(ctx, "evaluate_model", model)
        return {"model": model, "accuracy": accuracy}

    def ml_pipeline(ctx: Any, data: dict[str, Any]) -> Any:
        raw = yield api.activity(ctx, "ingest_data", data, app="app2")
        features = yield api.activity(ctx, "engineer_features", raw, app="app2")
        trained = yield api.child(ctx, "train_model", features, app="app3", iid=f"{ctx.instance_id}-train")
        loaded = yield api.activity(ctx, "load_model", trained["model"], app="app4")
        endpoint = yield api.activity(ctx, "setup_inference", trained["model"], app="app4")
        return {**trained, "loaded": loaded, "endpoint": endpoint}

    # -- client sides ----------------------------------------------------------------------------
    def simple(wf: str, data: Any = None, after_start: Callable[[Run], None] | None = None) -> Fn:
        def drive(run: Run) -> None:
            api.start(run.client(), wf, run.iid, data)
            if after_start is not None:
                after_start(run)
            run.finish(run.iid)

        return drive

    def drive_suspend_resume(run: Run) -> None:
        c = run.client()
        api.start(c, "suspend_resume", run.iid)
        if not run.until(run.iid, "RUNNING"):
            raise RuntimeError("the instance never ran")
        api.suspend(c, run.iid)  # reason "pause": neither SDK's suspend call takes one
        run.facts["suspended_seen"] = run.until(run.iid, "SUSPENDED")
        api.raise_event(c, run.iid, "approval", "yes")
        time.sleep(1)
        state = api.state(c, run.iid)
        run.facts["held_while_suspended"] = state is not None and state.status == "SUSPENDED"
        api.resume(c, run.iid)
        run.finish(run.iid)

    def drive_terminate(run: Run) -> None:
        c = run.client()
        nr = f"{run.iid}-nr"
        run.instances.update(child=f"{run.iid}-child", main_nr=nr, child_nr=f"{nr}-child")
        for iid in (run.iid, nr):
            api.start(c, "terminate_parent", iid)
        for child in (run.instances["child"], run.instances["child_nr"]):
            if not run.until(child, "RUNNING"):
                raise RuntimeError(f"child {child} never ran")
        api.terminate(c, run.iid, "stopped", recursive=True)
        api.terminate(c, nr, "stopped", recursive=False)
        for iid in (run.iid, nr):
            run.finish(iid)

    def drive_purge(run: Run) -> None:
        c = run.client()
        run.instances["child"] = f"{run.iid}-child"
        api.start(c, "purge_parent", run.iid)
        run.facts["output_before_purge"] = run.finish(run.iid).output
        api.purge(c, run.iid, recursive=True)

    def drive_custom_status(run: Run) -> None:
        c = run.client()
        api.start(c, "custom_status", run.iid)
        deadline = time.monotonic() + 30
        seen = None
        while time.monotonic() < deadline:
            state = api.state(c, run.iid)
            seen = state.custom_status if state is not None else None
            if seen == "step-1":
                break
            time.sleep(POLL)
        run.facts["first_custom_status"] = seen
        api.raise_event(c, run.iid, "next", None)
        run.finish(run.iid)

    def drive_scheduled_start(run: Run) -> None:
        c = run.client()
        api.start(c, "scheduled_start", run.iid, at=datetime.now(UTC) + timedelta(seconds=3))
        state = api.state(c, run.iid)
        run.facts["pending_before_start"] = state is not None and state.status == "PENDING"
        run.finish(run.iid)

    def drive_reuse(run: Run) -> None:
        c = run.client()
        api.start(c, "reuse", run.iid, "first")
        if not run.until(run.iid, "RUNNING"):
            raise RuntimeError("the instance never ran")
        try:
            api.start(c, "reuse", run.iid, "again")
            rejected = False
        except grpc.RpcError:  # both SDKs pass the server's refusal on as is
            rejected = True
        run.facts["duplicate_while_running_rejected"] = rejected
        api.raise_event(c, run.iid, "finish", "a")
        run.facts["first_output"] = run.finish(run.iid).output
        api.start(c, "reuse", run.iid, "second")
        api.raise_event(c, run.iid, "finish", "b")
        run.finish(run.iid)

    def drive_list(run: Run) -> None:
        c = run.client()
        ids = [f"{run.iid}-{i}" for i in range(5)]
        run.instances["main"] = ids[0]
        for i, iid in enumerate(ids):
            api.start(c, "noop", iid, i)
        for iid in ids:
            run.finish(iid)
        seen: Counter[str] = Counter()
        largest, token = 0, None
        for _ in range(100_000):  # a token that never ends is a failure, not a hang
            page, token = api.list_page(c, 2, token)
            seen.update(page)
            largest = max(largest, len(page))
            if not token:
                break
        else:
            raise RuntimeError("the listing never ended")
        run.facts["listed"] = sorted(i for i in seen if i.startswith(f"{run.iid}-"))
        run.facts["largest_page"] = largest
        run.facts["duplicates"] = sum(1 for n in seen.values() if n > 1)

    def drive_history(run: Run) -> None:
        c = run.client()
        api.start(c, "history_chain", run.iid)
        run.finish(run.iid)
        kinds = api.history(c, run.iid)
        run.facts["task_scheduled"] = kinds.count("taskScheduled")
        run.facts["task_completed"] = kinds.count("taskCompleted")
        run.facts["execution_completed"] = kinds.count("executionCompleted")
        started = kinds.index("executionStarted") if "executionStarted" in kinds else None
        run.facts["started_first"] = started is not None and all(
            i > started for i, k in enumerate(kinds) if k == "taskScheduled"
        )

    def drive_continue_as_new(run: Run) -> None:
        c = run.client()
        api.start(c, "continue_as_new", run.iid, 0)
        # `go` first: generation 0 does not wait for it, so it must be carried over twice.
        api.raise_event(c, run.iid, "go", "carried")
        api.raise_event(c, run.iid, "start", None)
        run.finish(run.iid)

    def drive_target_late(run: Run) -> None:
        api.start(run.client(), "late_target", run.iid)
        time.sleep(3)
        state = api.state(run.client(), run.iid)
        run.facts["running_before_target_online"] = state is not None and state.status == "RUNNING"
        run.host("remote")
        run.finish(run.iid)

    def drive_ml_pipeline(run: Run) -> None:
        run.instances = {"main": run.iid, "train": f"{run.iid}-train"}
        api.start(run.client("app1"), "ml_pipeline", run.iid, {"dataset": "iris"})
        run.finish(run.iid, "app1")

    def raise_approval(run: Run) -> None:
        api.raise_event(run.client(), run.iid, "approval", {"approved": True})

    def one(
        wf: Fn,
        acts: dict[str, Fn] | None = None,
        more: dict[str, Fn] | None = None,
        *,
        input: Any = None,
        after_start: Callable[[Run], None] | None = None,
        drive: Callable[[Run], None] | None = None,
    ) -> Scenario:
        """A scenario on app `main` alone: workflow `wf` (more workflows in `more`), by default
        started with `input` and waited for."""
        workflows = {wf.__name__: wf, **(more or {})}
        return Scenario({"main": (workflows, acts or {})}, drive or simple(wf.__name__, input, after_start))

    def named(*fns: Fn) -> dict[str, Fn]:
        return {fn.__name__: fn for fn in fns}

    return {
        "hello_chain": one(hello_chain, named(say_hello), input="World"),
        "fan_out_fan_in": one(fan_out_fan_in, named(square), input=100),
        "durable_timer": one(durable_timer),
        "external_event": one(external_event, after_start=raise_approval),
        "event_timeout": one(event_timeout),
        "activity_retry": one(activity_retry, named(flaky)),
        "child_workflow": one(parent_workflow, named(square), named(child_workflow), input=5),
        "failure_details": one(failing_workflow, named(boom)),
        "multi_app_activity": Scenario(
            {"main": (named(cross_app_activity), {}), "remote": ({}, named(remote_echo))},
            simple("cross_app_activity"),
        ),
        "multi_app_child": Scenario(
            {"main": (named(cross_app_child), {}), "remote": (named(remote_child), named(remote_echo))},
            simple("cross_app_child"),
        ),
        "suspend_resume": one(suspend_resume, drive=drive_suspend_resume),
        "terminate": one(terminate_parent, more=named(terminate_child), drive=drive_terminate),
        "purge_recursive": one(purge_parent, more=named(purge_child), drive=drive_purge),
        "custom_status": one(custom_status, drive=drive_custom_status),
        "scheduled_start": one(scheduled_start, drive=drive_scheduled_start),
        "instance_id_reuse": one(reuse, drive=drive_reuse),
        "list_instance_ids": one(noop, drive=drive_list),
        "get_instance_history": one(history_chain, named(say_hello), drive=drive_history),
        "continue_as_new": one(continue_as_new, drive=drive_continue_as_new),
        "child_retry": one(child_retry_parent, named(child_attempt), named(flaky_child)),
        "target_app_late": Scenario(
            {"main": (named(late_target), {}), "remote": ({}, named(remote_echo))},
            drive_target_late,
            hosted=("main",),
        ),
        "target_app_missing_activity": Scenario(
            {"main": (named(missing_activity), {}), "remote": ({}, named(remote_echo))},
            simple("missing_activity"),
        ),
        "ml_pipeline": Scenario(
            {
                "app1": (named(ml_pipeline), {}),
                "app2": ({}, named(ingest_data, engineer_features)),
                "app3": (named(train_model), named(fit_model, evaluate_model)),
                "app4": ({}, named(load_model, setup_inference)),
            },
            drive_ml_pipeline,
            hosted=("app1",),  # app2..app4 are other harnesses, run with --serve
        ),
    }
