"""The SDK surface the Python scenarios use, over either Python SDK.

`dapr` is the Dapr Python SDK (dapr.ext.workflow); `legacy` is durabletask-dapr. Their generated
protos cannot share a process, so only the chosen one is imported.
"""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib.metadata import version
from typing import Any

import grpc

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


TOKEN_HEADER = "dapr-api-token"


class _CallDetails(
    namedtuple("_CallDetails", "method timeout metadata credentials wait_for_ready compression"),
    grpc.ClientCallDetails,
):
    """What a grpc client interceptor hands on (grpc.ClientCallDetails has no constructor)."""


class TokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Sends an app's `dapr-api-token` on every call, unary and streaming (GetWorkItems)."""

    def __init__(self, token: str) -> None:
        self._metadata = ((TOKEN_HEADER, token),)

    def _details(self, d: Any) -> Any:
        metadata = (*(d.metadata or ()), *self._metadata)
        return _CallDetails(d.method, d.timeout, metadata, d.credentials, d.wait_for_ready, d.compression)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


def _takes_input(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The scenario functions take (ctx, input); dapr before 1.18 calls a workflow with ctx
    alone when its input is None, so register a wrapper whose input defaults to None."""

    def call(ctx: Any, data: Any = None) -> Any:
        return fn(ctx, data)

    call.__name__ = fn.__name__
    return call


class Api:
    def __init__(self, sdk: str, *, tls: bool = False, tokens: dict[str, str] | None = None) -> None:
        """`tls`: dial with TLS (the CA to trust is the process's default roots, see harness.py);
        `tokens`: app role -> the `dapr-api-token` its connections send."""
        self.sdk = sdk
        self.tls = tls
        self.tokens = tokens or {}
        if sdk == "dapr":
            import dapr.ext.workflow as wf

            self.wf = wf
            self.name = f"python-dapr@{version('dapr')}"
            failed = getattr(wf, "TaskFailedError", None)
            if failed is None:  # dapr-ext-workflow before 1.18 raises durabletask-dapr's own
                from durabletask.task import TaskFailedError as failed
            self.task_failed: type[Exception] = failed
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
        propagation: str | None = None,
    ) -> Any:
        call = ctx.call_child_workflow if self.sdk == "dapr" else ctx.call_sub_orchestrator
        more = {"propagation": self.wf.PropagationScope[propagation]} if propagation else {}
        return call(name, input=data, app_id=app, instance_id=iid, retry_policy=retry, **more)

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

    # -- dialing: the one place a connection is made for an app role ------------------
    def _dapr_address(self, address: str) -> tuple[str, str]:
        """host and port for dapr's constructors, which join them into a Dapr gRPC endpoint
        URI: `?tls=true` is that URI's documented TLS switch (no secure_channel argument)."""
        host, port = address.rsplit(":", 1)
        return host, f"{port}?tls=true" if self.tls else port

    def _legacy_options(self, app: str) -> dict[str, Any]:
        token = self.tokens.get(app)
        return {"secure_channel": self.tls, "metadata": [(TOKEN_HEADER, token)] if token else None}

    @contextmanager
    def _dapr_client_token(self, app: str) -> Iterator[None]:
        """DaprWorkflowClient takes no interceptors or metadata: it reads DAPR_API_TOKEN from
        dapr's settings (the environment) in its constructor. A value set on the settings
        object wins over the environment, so set it for this one construction only."""
        from dapr.conf import settings

        token = self.tokens.get(app)
        if token is None:
            yield
            return
        settings.DAPR_API_TOKEN = token
        try:
            yield
        finally:
            del settings.DAPR_API_TOKEN

    # -- hosting -----------------------------------------------------------------
    def worker(
        self,
        app: str,
        address: str,
        workflows: dict[str, Callable[..., Any]],
        activities: dict[str, Callable[..., Any]],
        versioned: list[tuple[str, str, Callable[..., Any], bool]] | None = None,
    ) -> Any:
        """`versioned`: (workflow name, version name, function, is latest) registrations."""
        if self.sdk == "dapr":
            host, port = self._dapr_address(address)
            token = self.tokens.get(app)
            interceptors = [TokenInterceptor(token)] if token else None
            rt = self.wf.WorkflowRuntime(host=host, port=port, interceptors=interceptors)
            for name, fn in workflows.items():
                rt.register_workflow(_takes_input(fn), name=name)
            for name, version_name, fn, latest in versioned or ():
                rt.register_versioned_workflow(
                    _takes_input(fn), name=name, version_name=version_name, is_latest=latest
                )
            for name, fn in activities.items():
                rt.register_activity(_takes_input(fn), name=name)
            rt.start()
            return rt
        w = self.worker_mod.TaskHubGrpcWorker(host_address=address, **self._legacy_options(app))
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
    def client(self, app: str, address: str) -> Any:
        if self.sdk == "dapr":
            host, port = self._dapr_address(address)
            with self._dapr_client_token(app):
                return self.wf.DaprWorkflowClient(host=host, port=port)
        return self.client_mod.TaskHubGrpcClient(host_address=address, **self._legacy_options(app))

    def start(self, c: Any, name: str, iid: str, data: Any = None, at: datetime | None = None) -> None:
        if self.sdk == "dapr":
            c.schedule_new_workflow(self._workflow_ref(name), input=data, instance_id=iid, start_at=at)
        else:
            c.schedule_new_orchestration(name, input=data, instance_id=iid, start_at=at)

    def _workflow_ref(self, name: str) -> Any:
        """dapr before 1.18 schedules a workflow by function only and takes its __name__: a
        stand-in that carries the name (the workflow may live in another language's worker)."""
        if tuple(int(p) for p in version("dapr").split(".")[:2]) >= (1, 18):
            return name

        def ref() -> None: ...

        ref.__name__ = name
        return ref

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

    def need(self, feature: str) -> None:
        """Raises Unsupported when the SDK has no public API for `feature` (checked by a
        scenario's client side, before any workflow needs it)."""
        if self.sdk == "dapr":
            return
        missing = {
            "versioning": "durabletask-dapr 0.17.4's TaskHubGrpcWorker.add_orchestrator takes no version",
            "patches": "durabletask-dapr 0.17.4's OrchestrationContext has no is_patched",
            "rerun": "durabletask-dapr 0.17.4's TaskHubGrpcClient has no rerun-from-event call",
            "propagation": "durabletask-dapr 0.17.4's call_sub_orchestrator takes no history propagation",
            "history": "durabletask-dapr 0.17.4's TaskHubGrpcClient has no get-instance-history call",
        }
        raise Unsupported(missing[feature])

    def rerun(
        self, c: Any, iid: str, event_id: int, new_iid: str, *, data: Any = None, new_input: bool
    ) -> str:
        self.need("rerun")
        if new_input:
            return str(c.rerun_workflow_from_event(iid, event_id, new_instance_id=new_iid, input=data))
        return str(c.rerun_workflow_from_event(iid, event_id, new_instance_id=new_iid))

    def history_ids(self, c: Any, iid: str) -> list[tuple[str, int]]:
        """(kind, event ID) of the instance's history events, oldest first."""
        self.need("history")
        return [(e.event_type.value, e.event_id) for e in c.get_workflow_history(iid)]

    def history(self, c: Any, iid: str) -> list[str]:
        """The kinds of the instance's history events, oldest first, as the proto names them."""
        if self.sdk != "dapr":
            raise Unsupported("durabletask-dapr 0.17.4's TaskHubGrpcClient has no get-instance-history call")
        return [e.event_type.value for e in c.get_workflow_history(iid)]
