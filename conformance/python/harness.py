"""Python harness of the conformance suite (see conformance/README.md).

    python conformance/python/harness.py --sdk dapr   --scenario NAME --app main=H:P --app remote=H:P --run-id R
    python conformance/python/harness.py --sdk legacy ...

`dapr` is the Dapr Python SDK 1.19 (dapr.ext.workflow); `legacy` is durabletask-dapr
0.17.4. Their generated protos cannot share a process, so only the chosen one is imported.
The scenario code is written once against a small adapter.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

TIMEOUT = 120


class Api:
    """The SDK surface the scenarios use."""

    def __init__(self, sdk: str) -> None:
        self.sdk = sdk
        if sdk == "dapr":
            from importlib.metadata import version

            import dapr.ext.workflow as wf

            self.wf = wf
            self.name = f"python-dapr@{version('dapr')}"
        else:
            from importlib.metadata import version

            from durabletask import client, task, worker

            self.client_mod, self.task, self.worker_mod = client, task, worker
            self.name = f"python-durabletask@{version('durabletask-dapr')}"

    # -- workflow-side calls ------------------------------------------------------
    def activity(
        self, ctx: Any, name: str, data: Any = None, *, app: str | None = None, retry: Any = None
    ) -> Any:
        return ctx.call_activity(name, input=data, app_id=app, retry_policy=retry)

    def child(self, ctx: Any, name: str, data: Any = None, *, app: str | None = None) -> Any:
        if self.sdk == "dapr":
            return ctx.call_child_workflow(name, input=data, app_id=app)
        return ctx.call_sub_orchestrator(name, input=data, app_id=app)

    def when_all(self, tasks: list[Any]) -> Any:
        return (self.wf if self.sdk == "dapr" else self.task).when_all(tasks)

    def when_any(self, tasks: list[Any]) -> Any:
        return (self.wf if self.sdk == "dapr" else self.task).when_any(tasks)

    def retry(self) -> Any:
        kind = self.wf.RetryPolicy if self.sdk == "dapr" else self.task.RetryPolicy
        return kind(
            first_retry_interval=timedelta(milliseconds=100),
            max_number_of_attempts=3,
            backoff_coefficient=1.0,
        )

    # -- hosting -----------------------------------------------------------------
    def worker(
        self,
        address: str,
        workflows: dict[str, Callable[..., Any]],
        activities: dict[str, Callable[..., Any]],
    ) -> Any:
        host, port = address.rsplit(":", 1)
        if self.sdk == "dapr":
            rt = self.wf.WorkflowRuntime(host=host, port=port)
            for name, fn in workflows.items():
                rt.register_workflow(fn, name=name)
            for name, fn in activities.items():
                rt.register_activity(fn, name=name)
            rt.start()
            return rt
        w = self.worker_mod.TaskHubGrpcWorker(host_address=address)
        # 0.17.4 registers under the function's own name: the scenario functions carry theirs.
        for name, fn in workflows.items():
            assert w.add_orchestrator(fn) == name, name
        for name, fn in activities.items():
            assert w.add_activity(fn) == name, name
        w.start()
        return w

    def stop(self, worker: Any) -> None:
        worker.shutdown() if self.sdk == "dapr" else worker.stop()

    def client(self, address: str) -> Any:
        host, port = address.rsplit(":", 1)
        if self.sdk == "dapr":
            return self.wf.DaprWorkflowClient(host=host, port=port)
        return self.client_mod.TaskHubGrpcClient(host_address=address)

    def start(self, c: Any, name: str, iid: str, data: Any = None) -> None:
        if self.sdk == "dapr":
            c.schedule_new_workflow(name, input=data, instance_id=iid)
        else:
            c.schedule_new_orchestration(name, input=data, instance_id=iid)

    def raise_event(self, c: Any, iid: str, name: str, data: Any) -> None:
        if self.sdk == "dapr":
            c.raise_workflow_event(iid, name, data=data)
        else:
            c.raise_orchestration_event(iid, name, data=data)

    def wait(self, c: Any, iid: str) -> Any:
        if self.sdk == "dapr":
            return c.wait_for_workflow_completion(iid, timeout_in_seconds=TIMEOUT)
        return c.wait_for_orchestration_completion(iid, timeout=TIMEOUT)


def scenarios(api: Api) -> dict[str, dict[str, Any]]:
    """Each scenario: workflows/activities per app, the workflow to start, its input, an optional client step."""
    attempts: Counter[str] = Counter()
    lock = threading.Lock()

    def say_hello(ctx: Any, name: str) -> str:
        return f"Hello {name}!"

    def square(ctx: Any, x: int) -> int:
        return x * x

    def flaky(ctx: Any, _: Any) -> str:
        key = getattr(ctx, "workflow_id", None) or getattr(ctx, "orchestration_id", "")
        with lock:
            attempts[key] += 1
            n = attempts[key]
        if n < 3:
            raise RuntimeError(f"attempt {n} failed")
        return "ok"

    def boom(ctx: Any, _: Any) -> None:
        raise RuntimeError("kaboom")

    def remote_echo(ctx: Any, s: str) -> str:
        return f"remote:{s}"

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
        approval = ctx.wait_for_external_event("approval")
        timeout = ctx.create_timer(timedelta(seconds=60))
        winner = yield api.when_any([approval, timeout])
        return approval.get_result() if winner == approval else "timeout"

    def event_timeout(ctx: Any, _: Any) -> Any:
        never = ctx.wait_for_external_event("never")
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

    def raise_approval(c: Any, iid: str) -> None:
        api.raise_event(c, iid, "approval", {"approved": True})

    def one(
        wf: str, fn: Callable[..., Any], acts: dict[str, Callable[..., Any]] | None = None, **kw: Any
    ) -> dict[str, Any]:
        return {"apps": {"main": ({wf: fn}, acts or {})}, "start": wf, **kw}

    return {
        "hello_chain": one("hello_chain", hello_chain, {"say_hello": say_hello}, input="World"),
        "fan_out_fan_in": one("fan_out_fan_in", fan_out_fan_in, {"square": square}, input=100),
        "durable_timer": one("durable_timer", durable_timer),
        "external_event": one("external_event", external_event, after_start=raise_approval),
        "event_timeout": one("event_timeout", event_timeout),
        "activity_retry": one("activity_retry", activity_retry, {"flaky": flaky}),
        "child_workflow": {
            "apps": {
                "main": (
                    {"parent_workflow": parent_workflow, "child_workflow": child_workflow},
                    {"square": square},
                )
            },
            "start": "parent_workflow",
            "input": 5,
        },
        "failure_details": one("failing_workflow", failing_workflow, {"boom": boom}),
        "multi_app_activity": {
            "apps": {
                "main": ({"cross_app_activity": cross_app_activity}, {}),
                "remote": ({}, {"remote_echo": remote_echo}),
            },
            "start": "cross_app_activity",
        },
        "multi_app_child": {
            "apps": {
                "main": ({"cross_app_child": cross_app_child}, {}),
                "remote": ({"remote_child": remote_child}, {"remote_echo": remote_echo}),
            },
            "start": "cross_app_child",
        },
    }


def run(api: Api, name: str, apps: dict[str, str], run_id: str) -> dict[str, Any]:
    spec = scenarios(api)[name]
    iid = f"{run_id}-{name}"
    line: dict[str, Any] = {"scenario": name, "sdk": api.name, "instances": {"main": iid}, "error": None}
    workers = []
    try:
        for app, (workflows, activities) in spec["apps"].items():
            workers.append(api.worker(apps[app], workflows, activities))
        c = api.client(apps["main"])
        api.start(c, spec["start"], iid, spec.get("input"))
        if "after_start" in spec:
            spec["after_start"](c, iid)
        if api.wait(c, iid) is None:
            line["error"] = "the instance vanished while waiting"
    except Exception as err:  # the line is printed whatever happened
        line["error"] = f"{type(err).__name__}: {err}"
    finally:
        for w in workers:
            try:
                api.stop(w)
            except Exception as err:
                print(f"stopping a worker failed: {err}", file=sys.stderr)
    return line


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sdk", choices=["dapr", "legacy"], default="dapr")
    parser.add_argument("--scenario")
    parser.add_argument("--app", action="append", default=[], help="APP=HOST:PORT")
    parser.add_argument("--run-id", default=str(int(time.time())))
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    api = Api(args.sdk)
    if args.list:
        print("\n".join(scenarios(api)))
        return 0
    apps = dict(a.split("=", 1) for a in args.app)
    line = run(api, args.scenario, apps, args.run_id)
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
