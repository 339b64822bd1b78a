"""The SDK surface the Python scenarios use, over either Python SDK.

`dapr` is the Dapr Python SDK (dapr.ext.workflow); `legacy` is durabletask-dapr. Their generated
protos cannot share a process, so only the chosen one is imported.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib.metadata import version
from typing import Any

TIMEOUT = 120  # seconds a harness waits for a workflow to finish


class Unsupported(Exception):
    """The SDK has no public API for what the scenario needs (reported as n/a)."""


def decode(payload: str | None) -> Any:
    """A serialized payload as JSON, or as the raw string when it is not JSON (a custom
    status set from a str is stored as is)."""
    if payload is None:
        return None
    try:
        return json.loads(payload)
    except json.JSONDecodeError:
        return payload


@dataclass
class State:
    status: str  # RUNNING, COMPLETED, SUSPENDED, ... as the SDK names it
    output: Any
    custom_status: Any


class Api:
    def __init__(self, sdk: str) -> None:
        self.sdk = sdk
        if sdk == "dapr":
            import dapr.ext.workflow as wf

            self.wf = wf
            self.name = f"python-dapr@{version('dapr')}"
            self.task_failed: type[Exception] = wf.TaskFailedError
        else:
            from durabletask import client, task, worker

            self.client_mod, self.task, self.worker_mod = client, task, worker
            self.name = f"python-durabletask@{version('durabletask-dapr')}"
            self.task_failed = task.TaskFailedError

    # -- workflow-side calls ------------------------------------------------------
    def activity(
        self, ctx: Any, name: str, data: Any = None, *, app: str | None = None, retry: Any = None
    ) -> Any:
        return ctx.call_activity(name, input=data, app_id=app, retry_policy=retry)

    def child(
        self,
        ctx: Any,
        name: str,
        data: Any = None,
        *,
        app: str | None = None,
        iid: str | None = None,
        retry: Any = None,
    ) -> Any:
        call = ctx.call_child_workflow if self.sdk == "dapr" else ctx.call_sub_orchestrator
        return call(name, input=data, app_id=app, instance_id=iid, retry_policy=retry)

    def when_all(self, tasks: list[Any]) -> Any:
        return (self.wf if self.sdk == "dapr" else self.task).when_all(tasks)

    def when_any(self, tasks: list[Any]) -> Any:
        return (self.wf if self.sdk == "dapr" else self.task).when_any(tasks)

    def retry(self, first_ms: int = 100, attempts: int = 3) -> Any:
        kind = self.wf.RetryPolicy if self.sdk == "dapr" else self.task.RetryPolicy
        return kind(
            first_retry_interval=timedelta(milliseconds=first_ms),
            max_number_of_attempts=attempts,
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

    # -- client calls --------------------------------------------------------------
    def client(self, address: str) -> Any:
        host, port = address.rsplit(":", 1)
        if self.sdk == "dapr":
            return self.wf.DaprWorkflowClient(host=host, port=port)
        return self.client_mod.TaskHubGrpcClient(host_address=address)

    def start(self, c: Any, name: str, iid: str, data: Any = None, at: datetime | None = None) -> None:
        if self.sdk == "dapr":
            c.schedule_new_workflow(name, input=data, instance_id=iid, start_at=at)
        else:
            c.schedule_new_orchestration(name, input=data, instance_id=iid, start_at=at)

    def raise_event(self, c: Any, iid: str, name: str, data: Any) -> None:
        if self.sdk == "dapr":
            c.raise_workflow_event(iid, name, data=data)
        else:
            c.raise_orchestration_event(iid, name, data=data)

    @staticmethod
    def _state(raw: Any) -> State | None:
        if raw is None:
            return None
        return State(
            raw.runtime_status.name, decode(raw.serialized_output), decode(raw.serialized_custom_status)
        )

    def state(self, c: Any, iid: str) -> State | None:
        if self.sdk == "dapr":
            return self._state(c.get_workflow_state(iid))
        return self._state(c.get_orchestration_state(iid))

    def wait(self, c: Any, iid: str) -> State | None:
        if self.sdk == "dapr":
            return self._state(c.wait_for_workflow_completion(iid, timeout_in_seconds=TIMEOUT))
        return self._state(c.wait_for_orchestration_completion(iid, timeout=TIMEOUT))

    def suspend(self, c: Any, iid: str) -> None:
        # Neither SDK takes a reason for suspending.
        c.pause_workflow(iid) if self.sdk == "dapr" else c.suspend_orchestration(iid)

    def resume(self, c: Any, iid: str) -> None:
        c.resume_workflow(iid) if self.sdk == "dapr" else c.resume_orchestration(iid)

    def terminate(self, c: Any, iid: str, output: Any, *, recursive: bool) -> None:
        if self.sdk == "dapr":
            c.terminate_workflow(iid, output=output, recursive=recursive)
        else:
            c.terminate_orchestration(iid, output=output, recursive=recursive)

    def purge(self, c: Any, iid: str, *, recursive: bool) -> None:
        if self.sdk == "dapr":
            c.purge_workflow(iid, recursive=recursive)
        else:
            c.purge_orchestration(iid, recursive=recursive)

    def list_page(self, c: Any, size: int, token: str | None) -> tuple[list[str], str | None]:
        """One page of instance IDs and the next page's token (None at the end)."""
        if self.sdk != "dapr":
            raise Unsupported("durabletask-dapr 0.17.4's TaskHubGrpcClient has no list-instance-IDs call")
        page = c.list_workflow_instance_ids(page_size=size, continuation_token=token)
        return list(page.instance_ids), page.continuation_token or None

    def history(self, c: Any, iid: str) -> list[str]:
        """The kinds of the instance's history events, oldest first, as the proto names them."""
        if self.sdk != "dapr":
            raise Unsupported("durabletask-dapr 0.17.4's TaskHubGrpcClient has no get-instance-history call")
        return [e.event_type.value for e in c.get_workflow_history(iid)]
