"""Helpers for the dapr.ext.workflow (dapr 1.19) suite.

Never import `backend` or `durabletask` here.
"""

from __future__ import annotations

import contextlib
import json
import threading
import types
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from dapr.ext.workflow import DaprWorkflowClient, WorkflowRuntime, WorkflowState, WorkflowStatus

from tests.e2e.harness import wait_until

HOST = "127.0.0.1"

Registration = Callable[..., Any] | tuple[str, Callable[..., Any]]


def fresh(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of `fn` without the markers WorkflowRuntime stamps on registered functions.

    dapr's WorkflowRuntime refuses to register the same function object twice (it sets
    `_workflow_registered` on it), but several runtimes in one test process (two apps,
    restarts) need the same code. Workflows still refer to activities/children by the
    original module-level functions, whose `__name__` is the registered name.
    """
    assert isinstance(fn, types.FunctionType), fn
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__annotations__ = dict(fn.__annotations__)
    copy.__qualname__ = fn.__qualname__
    copy.__module__ = fn.__module__
    return copy


def _split(reg: Registration) -> tuple[str, Callable[..., Any]]:
    if isinstance(reg, tuple):
        return reg
    return reg.__name__, reg


def new_runtime(
    port: int,
    workflows: Iterable[Registration] = (),
    activities: Iterable[Registration] = (),
    **kwargs: Any,
) -> WorkflowRuntime:
    rt = WorkflowRuntime(host=HOST, port=str(port), **kwargs)
    for reg in workflows:
        name, fn = _split(reg)
        rt.register_workflow(fresh(fn), name=name)
    for reg in activities:
        name, fn = _split(reg)
        rt.register_activity(fresh(fn), name=name)
    return rt


@contextlib.contextmanager
def running_runtime(
    port: int,
    workflows: Iterable[Registration] = (),
    activities: Iterable[Registration] = (),
    **kwargs: Any,
) -> Iterator[WorkflowRuntime]:
    rt = new_runtime(port, workflows, activities, **kwargs)
    rt.start()
    try:
        yield rt
    finally:
        rt.shutdown()


@contextlib.contextmanager
def workflow_client(port: int) -> Iterator[DaprWorkflowClient]:
    client = DaprWorkflowClient(host=HOST, port=str(port))
    try:
        yield client
    finally:
        client.close()


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def output_of(state: WorkflowState | None) -> Any:
    assert state is not None, "workflow state is None (instance not found)"
    raw = state.serialized_output
    return None if raw is None else json.loads(raw)


def custom_status_of(state: WorkflowState | None) -> Any:
    assert state is not None
    raw = state.serialized_custom_status
    return None if raw is None or raw == "" else json.loads(raw)


def describe(state: WorkflowState | None) -> str:
    if state is None:
        return "<no state>"
    fd = state.failure_details
    fds = f" failure=[{fd.error_type}] {fd.message}" if fd is not None else ""
    return (
        f"{state.instance_id}: {state.runtime_status.name} output={state.serialized_output!r} "
        f"custom_status={state.serialized_custom_status!r}{fds}"
    )


def wait_done(client: DaprWorkflowClient, instance_id: str, timeout: int = 60) -> WorkflowState:
    state = client.wait_for_workflow_completion(instance_id, fetch_payloads=True, timeout_in_seconds=timeout)
    assert state is not None, f"instance {instance_id} not found"
    return state


def assert_completed(client: DaprWorkflowClient, instance_id: str, timeout: int = 60) -> Any:
    """Wait for completion, assert COMPLETED, return the decoded output."""
    state = wait_done(client, instance_id, timeout)
    assert state.runtime_status == WorkflowStatus.COMPLETED, describe(state)
    return output_of(state)


def wait_status(
    client: DaprWorkflowClient,
    instance_id: str,
    status: WorkflowStatus,
    timeout: float = 30.0,
) -> WorkflowState:
    def check() -> WorkflowState | None:
        st = client.get_workflow_state(instance_id, fetch_payloads=True)
        return st if st is not None and st.runtime_status == status else None

    return wait_until(check, timeout=timeout, message=f"{instance_id} to be {status.name}")


def wait_custom_status(
    client: DaprWorkflowClient, instance_id: str, expected: Any, timeout: float = 30.0
) -> WorkflowState:
    def check() -> WorkflowState | None:
        st = client.get_workflow_state(instance_id, fetch_payloads=True)
        if st is None or st.serialized_custom_status in (None, ""):
            return None
        return st if json.loads(st.serialized_custom_status) == expected else None

    return wait_until(check, timeout=timeout, message=f"{instance_id} custom status == {expected!r}")


class Gates:
    """Per-key threading events: activities block on `wait(key)` until the test `open`s it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: dict[str, threading.Event] = {}
        self._entered: dict[str, threading.Event] = {}

    def _get(self, table: dict[str, threading.Event], key: str) -> threading.Event:
        with self._lock:
            ev = table.get(key)
            if ev is None:
                ev = table[key] = threading.Event()
            return ev

    def wait(self, key: str, timeout: float = 90.0) -> bool:
        self._get(self._entered, key).set()
        return self._get(self._gates, key).wait(timeout)

    def entered(self, key: str, timeout: float = 30.0) -> bool:
        return self._get(self._entered, key).wait(timeout)

    def open(self, key: str) -> None:
        self._get(self._gates, key).set()


class Counter:
    """Thread-safe per-key counters (activity attempt counts live in the test process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: defaultdict[str, int] = defaultdict(int)

    def incr(self, key: str) -> int:
        with self._lock:
            self._counts[key] += 1
            return self._counts[key]

    def get(self, key: str) -> int:
        with self._lock:
            return self._counts[key]


def history_types(events: Sequence[Any]) -> list[str]:
    return [e.event_type.name for e in events]
