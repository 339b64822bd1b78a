"""Scenarios of issue #13 (see conformance/scenarios/*/README.md): event order, suspend before
the first turn, rerun, stateful history, versioning and patches, history propagation, a child
missing on its target app, a cross-app retry, payloads near the limit, and terminate/purge split
into recursive and non-recursive."""

from __future__ import annotations

import threading
import time
import types
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc
from adapter import Api
from scenarios import Run, Scenario

Fn = Callable[..., Any]
PAYLOAD_LIMIT = 1024 * 1024  # the runner's --max-payload-bytes (conformance/runner.py)
EVENTS = 50
TAKE = (20, 15, 15)  # events each continue-as-new generation of event_order takes


def start_worker(
    run: Run,
    app: str,
    workflows: dict[str, Fn],
    activities: dict[str, Fn],
    versioned: list[tuple[str, str, Fn, bool]] | None = None,
) -> Any:
    """A worker with registrations of the drive's choosing (a worker swap mid-scenario)."""
    more = {"versioned": versioned} if versioned else {}  # other adapters may not take it
    w = run.api.worker(app, run.apps[app], workflows, activities, **more)
    run.workers.append(w)
    return w


def copy_fn(fn: Fn) -> Fn:
    """The same function as a new object: dapr marks a function registered on the object, so
    a second worker (another app, or a swap) needs its own copy."""
    return types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def stop_worker(run: Run, w: Any) -> None:
    run.workers.remove(w)
    run.api.stop(w)


def more_scenarios(api: Api) -> dict[str, Scenario]:
    runs: Counter[str] = Counter()
    lock = threading.Lock()

    def count(key: str) -> int:
        with lock:
            runs[key] += 1
            return runs[key]

    def named(*fns: Fn) -> dict[str, Fn]:
        return {fn.__name__: fn for fn in fns}

    # -- event_order ---------------------------------------------------------------------------
    def event_order(ctx: Any, data: dict[str, Any]) -> Any:
        gen, seen = data["gen"], list(data["seen"])
        for _ in range(TAKE[gen]):
            seen.append((yield ctx.wait_for_external_event("e")))
        if gen + 1 < len(TAKE):
            ctx.continue_as_new({"gen": gen + 1, "seen": seen}, save_events=True)
            return None
        return seen

    def drive_event_order(run: Run) -> None:
        c = run.client()
        api.start(c, "event_order", run.iid, {"gen": 0, "seen": []})
        # 1..50, not 0..49: dapr's client sends no data for a falsy value (0 arrives as None).
        for i in range(1, EVENTS + 1):
            api.raise_event(c, run.iid, "e", i)
        run.finish(run.iid)

    # -- suspend_before_start ------------------------------------------------------------------
    def count_run(ctx: Any, _: Any) -> str:
        return f"ran:{count('count_run')}"

    def suspend_first(ctx: Any, _: Any) -> Any:
        return (yield api.activity(ctx, "count_run"))

    def drive_suspend_first(run: Run) -> None:
        c = run.client()
        api.start(c, "suspend_first", run.iid)
        api.suspend(c, run.iid)
        run.facts["suspended_before_worker"] = run.until(run.iid, "SUSPENDED")
        run.host("main")
        time.sleep(1)  # a worker that got the turn would have run it by now
        state = api.state(c, run.iid)
        run.facts["held_with_worker"] = state is not None and state.status == "SUSPENDED"
        api.resume(c, run.iid)
        run.finish(run.iid)

    # -- rerun_from_event ----------------------------------------------------------------------
    def step(ctx: Any, s: str) -> str:
        count(f"step:{s}")
        return f"step:{s}"

    def rerun_chain(ctx: Any, x: str) -> Any:
        first = yield api.activity(ctx, "step", "first")
        second = yield api.activity(ctx, "step", x)
        return [first, second]

    def drive_rerun(run: Run) -> None:
        api.need("rerun")
        c = run.client()
        api.start(c, "rerun_chain", run.iid, "B")
        run.finish(run.iid)
        scheduled = [eid for kind, eid in api.history_ids(c, run.iid) if kind == "taskScheduled"]
        if len(scheduled) != 2:
            raise RuntimeError(f"expected two taskScheduled in the source, got {scheduled}")
        run.instances.update(rerun=f"{run.iid}-rerun", rerun_input=f"{run.iid}-rerun-input")
        api.rerun(c, run.iid, scheduled[1], run.instances["rerun"], new_input=False)
        run.finish(run.instances["rerun"])
        api.rerun(c, run.iid, scheduled[1], run.instances["rerun_input"], data="C", new_input=True)
        run.finish(run.instances["rerun_input"])
        run.facts["first_step_runs"] = runs["step:first"]

    # -- stateful_history ----------------------------------------------------------------------
    def inc(ctx: Any, x: int) -> int:
        return x + 1

    def stateful_chain(ctx: Any, _: Any) -> Any:
        x = 0
        for _ in range(6):
            x = yield api.activity(ctx, "inc", x)
        return x

    # -- versioning ----------------------------------------------------------------------------
    def versioned_v1(ctx: Any, _: Any) -> Any:
        return "v1:" + (yield ctx.wait_for_external_event("go"))

    def versioned_v2(ctx: Any, _: Any) -> Any:
        return "v2"

    def drive_versioning(run: Run) -> None:
        api.need("versioning")
        c = run.client()
        w = start_worker(run, "main", {}, {}, [("versioned", "v1", versioned_v1, True)])
        api.start(c, "versioned", run.iid)
        if not run.until(run.iid, "RUNNING"):
            raise RuntimeError("the instance never ran")
        stop_worker(run, w)
        w = start_worker(run, "main", {}, {}, [("versioned", "v2", versioned_v2, True)])
        api.raise_event(c, run.iid, "go", "yes")
        run.facts["stalled_without_version"] = run.until(run.iid, "STALLED")
        stop_worker(run, w)
        both = [
            ("versioned", "v1", copy_fn(versioned_v1), False),
            ("versioned", "v2", copy_fn(versioned_v2), True),
        ]
        start_worker(run, "main", {}, {}, both)
        run.finish(run.iid)
        run.instances["fresh"] = f"{run.iid}-fresh"
        api.start(c, "versioned", run.instances["fresh"])
        run.finish(run.instances["fresh"])

    # -- patches -------------------------------------------------------------------------------
    def patched_old(ctx: Any, _: Any) -> Any:
        result = yield api.activity(ctx, "step", "old")
        yield ctx.wait_for_external_event("go")
        return result

    def patched_new(ctx: Any, _: Any) -> Any:
        result = yield api.activity(ctx, "step", "new" if ctx.is_patched("fix") else "old")
        yield ctx.wait_for_external_event("go")
        return result

    def drive_patches(run: Run) -> None:
        api.need("patches")
        c = run.client()
        w = start_worker(run, "main", {"patched": patched_old}, named(step))
        api.start(c, "patched", run.iid)
        if not run.until(run.iid, "RUNNING"):
            raise RuntimeError("the instance never ran")
        stop_worker(run, w)
        start_worker(run, "main", {"patched": patched_new}, {"step": copy_fn(step)})
        run.instances["new"] = f"{run.iid}-new"
        api.start(c, "patched", run.instances["new"])
        for iid in (run.iid, run.instances["new"]):
            api.raise_event(c, iid, "go", None)
        for iid in (run.iid, run.instances["new"]):
            run.finish(iid)

    # -- history_propagation -------------------------------------------------------------------
    def stamp(ctx: Any, s: str) -> str:
        return f"stamped:{s}"

    def prop_root(ctx: Any, scope: str) -> Any:
        yield api.activity(ctx, "stamp", "root")
        return (yield api.child(ctx, "prop_middle", scope, app="remote", propagation="LINEAGE"))

    def prop_middle(ctx: Any, scope: str) -> Any:
        yield api.activity(ctx, "stamp", "middle")
        return (yield api.child(ctx, "prop_leaf", None, app="app1", propagation=scope))

    def prop_leaf(ctx: Any, _: Any) -> Any:
        history = ctx.get_propagated_history()
        return [] if history is None else [f"{w.app_id}/{w.name}" for w in history.get_workflows()]

    def drive_propagation(run: Run) -> None:
        api.need("propagation")
        c = run.client()
        run.instances["lineage"] = f"{run.iid}-lineage"
        api.start(c, "prop_root", run.iid, "OWN_HISTORY")
        api.start(c, "prop_root", run.instances["lineage"], "LINEAGE")
        for iid in (run.iid, run.instances["lineage"]):
            run.finish(iid)

    # -- child_missing_on_target ---------------------------------------------------------------
    def remote_child(ctx: Any, s: str) -> Any:
        return s

    def missing_child(ctx: Any, _: Any) -> Any:
        try:
            yield api.child(ctx, "not_registered_child", app="remote")
        except api.task_failed:
            return "caught"
        return "not failed"

    # -- cross_app_activity_retry --------------------------------------------------------------
    def remote_echo(ctx: Any, s: str) -> str:
        return f"remote:{s}"

    def retry_remote(ctx: Any, _: Any) -> Any:
        policy = api.retry(first_ms=500, attempts=20)
        return (yield api.activity(ctx, "remote_echo", "retried", app="remote", retry=policy))

    def drive_retry_remote(run: Run) -> None:
        api.need("history")
        c = run.client()
        w = start_worker(run, "remote", {}, {})  # the app is up, the activity is not
        api.start(c, "retry_remote", run.iid)
        deadline = time.monotonic() + 60
        while "taskFailed" not in api.history(c, run.iid):
            if time.monotonic() > deadline:
                raise RuntimeError("no attempt failed while the activity was missing")
            time.sleep(0.1)
        stop_worker(run, w)
        start_worker(run, "remote", {}, named(remote_echo))
        run.finish(run.iid)

    # -- large_payload -------------------------------------------------------------------------
    def echo(ctx: Any, s: str) -> str:
        return s

    def large_payload(ctx: Any, s: str) -> Any:
        back = yield api.activity(ctx, "echo", s)
        return {"length": len(back), "same": back == s}

    def drive_large_payload(run: Run) -> None:
        c = run.client()
        api.start(c, "large_payload", run.iid, "x" * (PAYLOAD_LIMIT - 4096 - 2))
        run.instances["over"] = f"{run.iid}-over"
        try:
            api.start(c, "large_payload", run.instances["over"], "x" * PAYLOAD_LIMIT)
            run.facts["over_limit_refused"] = "accepted"
        except grpc.RpcError as err:
            run.facts["over_limit_refused"] = err.code().name
        run.finish(run.iid)

    # -- terminate / purge, split --------------------------------------------------------------
    def terminate_parent(ctx: Any, _: Any) -> Any:
        return (yield api.child(ctx, "terminate_child", iid=f"{ctx.instance_id}-child"))

    def terminate_child(ctx: Any, _: Any) -> Any:
        return (yield ctx.wait_for_external_event("never"))

    def purge_parent(ctx: Any, _: Any) -> Any:
        return (yield api.child(ctx, "purge_child", iid=f"{ctx.instance_id}-child"))

    def purge_child(ctx: Any, _: Any) -> Any:
        return "child-done"

    def drive_terminate(recursive: bool) -> Fn:
        def drive(run: Run) -> None:
            c = run.client()
            run.instances["child"] = f"{run.iid}-child"
            api.start(c, "terminate_parent", run.iid)
            if not run.until(run.instances["child"], "RUNNING"):
                raise RuntimeError("the child never ran")
            api.terminate(c, run.iid, "stopped", recursive=recursive)
            run.finish(run.iid)
            if recursive:  # the child may stop a moment after its parent: judge after it
                run.until(run.instances["child"], "TERMINATED")

        return drive

    def drive_purge_parent_only(run: Run) -> None:
        c = run.client()
        run.instances["child"] = f"{run.iid}-child"
        api.start(c, "purge_parent", run.iid)
        run.facts["output_before_purge"] = run.finish(run.iid).output
        api.purge(c, run.iid, recursive=False)

    def on_main(workflows: dict[str, Fn], activities: dict[str, Fn], drive: Fn, **more: Any) -> Scenario:
        return Scenario({"main": (workflows, activities)}, drive, **more)

    def simple(wf: str, data: Any = None) -> Fn:
        def drive(run: Run) -> None:
            api.start(run.client(), wf, run.iid, data)
            run.finish(run.iid)

        return drive

    terminate_wfs = named(terminate_parent, terminate_child)
    return {
        "event_order": on_main(named(event_order), {}, drive_event_order),
        "suspend_before_start": on_main(
            named(suspend_first), named(count_run), drive_suspend_first, hosted=()
        ),
        "rerun_from_event": on_main(named(rerun_chain), named(step), drive_rerun),
        "stateful_history": on_main(named(stateful_chain), named(inc), simple("stateful_chain")),
        "versioning": on_main({}, {}, drive_versioning, hosted=()),
        "patches": on_main({}, {}, drive_patches, hosted=()),
        "history_propagation": Scenario(
            {
                "main": (named(prop_root), named(stamp)),
                "remote": (named(prop_middle), {"stamp": copy_fn(stamp)}),
                "app1": (named(prop_leaf), {}),
            },
            drive_propagation,
        ),
        "child_missing_on_target": Scenario(
            {"main": (named(missing_child), {}), "remote": (named(remote_child), {})},
            simple("missing_child"),
        ),
        "cross_app_activity_retry": Scenario(
            {"main": (named(retry_remote), {}), "remote": ({}, {})}, drive_retry_remote, hosted=("main",)
        ),
        "large_payload": on_main(named(large_payload), named(echo), drive_large_payload),
        "terminate_recursive": on_main(terminate_wfs, {}, drive_terminate(True)),
        "terminate_non_recursive": on_main(terminate_wfs, {}, drive_terminate(False)),
        "purge_non_recursive": on_main(named(purge_parent, purge_child), {}, drive_purge_parent_only),
    }
