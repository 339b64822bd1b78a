"""The load generator on the Dapr Python SDK (dapr.ext.workflow), same CLI and output as the Go one.

    python -m bench.pyloadgen --endpoint H:P [--remote H:P] --workload chain --count 100 --concurrency 50
    python -m bench.pyloadgen ... --tls-ca CA.pem --app-token main=PATH --app-token remote=PATH

A worker for app `main` (and for `multiapp` one for app `remote`, which alone hosts
`remote_add_one`) and a client, in this process; client calls run on a thread pool of
`--concurrency` threads. Prints one JSON result line (the `events` workload first prints
{"phase":"waiting"} and waits for a line on stdin) and exits 1 unless every workflow completed
with the expected output. Runs in its own process: never import `backend` here (its generated
protos and the SDK's register the same names).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import dapr.ext.workflow as wf
import grpc
from dapr.conf import settings
from dapr.ext.workflow.logger import LoggerOptions

from bench.stats import percentiles, turn_buckets

CHAIN_LENGTH = 5
FANOUT_WIDTH = 100
EVENT = "go"
EVENT_PAYLOAD = 1000
MAX_ERRORS = 5
CONNECT_TIMEOUT = 30.0  # the SDK's WorkflowRuntime.start() retries a dead endpoint forever

# -- activities -------------------------------------------------------------------------------


def add_one(ctx: wf.WorkflowActivityContext, x: int) -> int:
    return x + 1


def remote_add_one(ctx: wf.WorkflowActivityContext, x: int) -> int:
    return x + 1


def square(ctx: wf.WorkflowActivityContext, x: int) -> int:
    return x * x


# _ticks[i] is when the `long` workflow's activity i first ran (a redelivery is not a turn).
_ticks: list[float | None] = []
_ticks_lock = threading.Lock()


def tick(ctx: wf.WorkflowActivityContext, i: int) -> int:
    now = time.monotonic()
    with _ticks_lock:
        if 0 <= i < len(_ticks) and _ticks[i] is None:
            _ticks[i] = now
    return i


# -- workflows ---------------------------------------------------------------------------------


def bench_chain(ctx: wf.DaprWorkflowContext, x: int) -> Generator[Any, Any, int]:
    for _ in range(CHAIN_LENGTH):
        x = yield ctx.call_activity("add_one", input=x)
    return x


def bench_multiapp(ctx: wf.DaprWorkflowContext, x: int) -> Generator[Any, Any, int]:
    for _ in range(CHAIN_LENGTH):
        x = yield ctx.call_activity("remote_add_one", input=x, app_id="remote")
    return x


def bench_fanout(ctx: wf.DaprWorkflowContext, n: int) -> Generator[Any, Any, int]:
    results = yield wf.when_all([ctx.call_activity("square", input=i) for i in range(n)])
    return sum(results)


def bench_single(ctx: wf.DaprWorkflowContext, x: int) -> Generator[Any, Any, int]:
    x = yield ctx.call_activity("add_one", input=x)
    return x


def bench_event(ctx: wf.DaprWorkflowContext, x: int) -> Generator[Any, Any, int]:
    v: int = yield ctx.wait_for_external_event(EVENT)
    return x + v


def bench_long(ctx: wf.DaprWorkflowContext, n: int) -> Generator[Any, Any, int]:
    for i in range(n):
        got = yield ctx.call_activity("tick", input=i)
        if got != i:
            raise ValueError(f"tick {i} returned {got}")
    return n


def _split(endpoint: str, tls: bool) -> tuple[str, str]:
    """host and port for dapr's constructors, which join them into a Dapr gRPC endpoint URI:
    `?tls=true` is that URI's TLS switch (the CA comes from GRPC_DEFAULT_SSL_ROOTS_FILE_PATH)."""
    host, _, port = endpoint.rpartition(":")
    return host or "127.0.0.1", f"{port}?tls=true" if tls else port


@contextmanager
def _token(token: str | None) -> Iterator[None]:
    """dapr's WorkflowRuntime and DaprWorkflowClient read DAPR_API_TOKEN from dapr's settings
    in their constructors; a value set on the settings object wins over the environment, so
    it is set for one construction (main and remote may have different tokens)."""
    if token is None:
        yield
        return
    settings.DAPR_API_TOKEN = token
    try:
        yield
    finally:
        del settings.DAPR_API_TOKEN


def _runtime(
    args: argparse.Namespace,
    role: str,
    workflows: list[Callable[..., Any]],
    activities: list[Callable[..., Any]],
) -> Any:
    host, port = _split(args.endpoint if role == "main" else args.remote, bool(args.tls_ca))
    with _token(args.tokens.get(role)):
        rt = wf.WorkflowRuntime(host=host, port=port, logger_options=LoggerOptions(log_level="WARNING"))
    for w in workflows:
        rt.register_workflow(w, name=w.__name__)
    for a in activities:
        rt.register_activity(a, name=a.__name__)
    return rt


# -- results -----------------------------------------------------------------------------------


class Tally:
    """The outcome of each workflow; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.done = 0
        self.failures = 0
        self.errors: list[str] = []
        self.latency: list[float] = []
        self.server: list[float] = []

    def fail(self, message: str) -> None:
        with self._lock:
            self.failures += 1
            if len(self.errors) < MAX_ERRORS:
                self.errors.append(message)

    def ok(self, seconds: float, state: Any = None) -> None:
        with self._lock:
            self.done += 1
            self.latency.append(seconds * 1000)
            created = getattr(state, "created_at", None)
            updated = getattr(state, "last_updated_at", None)
            if created is not None and updated is not None:
                self.server.append((updated - created).total_seconds() * 1000)


class Bench:
    def __init__(self, client: Any, run_id: str, deadline: float, concurrency: int) -> None:
        self.client = client
        self.run_id = run_id
        self.deadline = deadline
        self.concurrency = max(1, concurrency)

    def id(self, workload: str, i: int) -> str:
        return f"{self.run_id}-{workload}-{i}"

    def remaining(self) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        return max(1, int(left))

    def check(self, iid: str, want: int) -> Any:
        """Waits for the instance to finish; returns its state or raises with what was wrong."""
        state = self.client.wait_for_workflow_completion(
            iid, fetch_payloads=True, timeout_in_seconds=self.remaining()
        )
        if state is None:
            raise RuntimeError(f"{iid}: not found")
        if state.runtime_status != wf.WorkflowStatus.COMPLETED:
            fd = state.failure_details
            raise RuntimeError(f"{iid}: status {state.runtime_status.name}: {fd.message if fd else ''}")
        raw = state.serialized_output
        if raw is None or json.loads(raw) != want:
            raise RuntimeError(f"{iid}: output {raw!r}, want {want}")
        return state

    def run_one(self, t: Tally, workflow: Callable[..., Any], iid: str, inp: int, want: int) -> None:
        start = time.monotonic()
        try:
            self.client.schedule_new_workflow(workflow, input=inp, instance_id=iid)
            state = self.check(iid, want)
        except Exception as e:
            t.fail(f"{iid}: {e}")
            return
        t.ok(time.monotonic() - start, state)

    def each(self, n: int, fn: Callable[[int], None], concurrency: int | None = None) -> None:
        with ThreadPoolExecutor(max_workers=concurrency or self.concurrency) as pool:
            for f in [pool.submit(fn, i) for i in range(n)]:
                f.result()

    def closed_loop(
        self, res: dict[str, Any], workflow: Callable[..., Any], n: int, per: int, inp: Any, want: Any, c: int
    ) -> Tally:
        t = Tally()
        start = time.monotonic()
        self.each(n, lambda i: self.run_one(t, workflow, self.id(res["workload"], i), inp(i), want(i)), c)
        res["seconds"] = time.monotonic() - start
        res["activities"] = t.done * per
        return t

    def events(self, res: dict[str, Any], n: int) -> Tally:
        t = Tally()
        bad: set[int] = set()
        start_all = time.monotonic()

        def start(i: int) -> None:
            iid = self.id("events", i)
            try:
                self.client.schedule_new_workflow(bench_event, input=i, instance_id=iid)
            except Exception as e:
                t.fail(f"{iid}: starting: {e}")
                bad.add(i)

        def running(i: int) -> None:
            if i in bad:
                return
            iid = self.id("events", i)
            try:
                state = self.client.wait_for_workflow_start(iid, timeout_in_seconds=self.remaining())
                if state is None or state.runtime_status != wf.WorkflowStatus.RUNNING:
                    raise RuntimeError(f"status {state.runtime_status.name if state else None}")
            except Exception as e:
                t.fail(f"{iid}: waiting for start: {e}")
                bad.add(i)

        self.each(n, start)
        self.each(n, running)
        res["start_seconds"] = time.monotonic() - start_all
        # The driver samples the server's memory now, with every instance in flight.
        emit({"phase": "waiting", "workflows": n, "start_seconds": res["start_seconds"]})
        sys.stdin.readline()

        def finish(i: int) -> None:
            if i in bad:
                return
            iid = self.id("events", i)
            raised = time.monotonic()
            try:
                self.client.raise_workflow_event(iid, EVENT, data=EVENT_PAYLOAD)
                self.check(iid, i + EVENT_PAYLOAD)
            except Exception as e:
                t.fail(f"{iid}: {e}")
                return
            t.ok(time.monotonic() - raised)  # latency: event raised to completion observed

        start_time = time.monotonic()
        self.each(n, finish)
        res["seconds"] = time.monotonic() - start_time
        return t

    def long(self, res: dict[str, Any], n: int) -> Tally:
        with _ticks_lock:
            _ticks[:] = [None] * n
        t = Tally()
        start = time.monotonic()
        self.run_one(t, bench_long, self.id("long", 0), n, n)
        res["seconds"] = time.monotonic() - start
        res["activities"] = t.done * n
        with _ticks_lock:
            res["turns"] = turn_buckets(list(_ticks))
        return t


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def run(args: argparse.Namespace, res: dict[str, Any]) -> None:
    n, c = args.count, args.concurrency
    if n < 1:
        raise ValueError("--count must be at least 1")
    workload = res["workload"]
    if workload == "multiapp" and not args.remote:
        raise ValueError("the multiapp workload needs --remote HOST:PORT")
    creds = grpc.ssl_channel_credentials(Path(args.tls_ca).read_bytes()) if args.tls_ca else None
    for endpoint in filter(None, (args.endpoint, args.remote if workload == "multiapp" else "")):
        with grpc.secure_channel(endpoint, creds) if creds else grpc.insecure_channel(endpoint) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT)
            except grpc.FutureTimeoutError:
                raise ConnectionError(f"no sidecar at {endpoint} after {CONNECT_TIMEOUT:.0f}s") from None
    runtimes = [
        _runtime(
            args,
            "main",
            [bench_chain, bench_multiapp, bench_fanout, bench_single, bench_event, bench_long],
            [add_one, square, tick],
        )
    ]
    if workload == "multiapp":
        runtimes.append(_runtime(args, "remote", [], [remote_add_one]))
    host, port = _split(args.endpoint, bool(args.tls_ca))
    with _token(args.tokens.get("main")):
        client = wf.DaprWorkflowClient(
            host=host, port=port, logger_options=LoggerOptions(log_level="WARNING")
        )
    for rt in runtimes:
        rt.start()
    try:
        b = Bench(client, args.run_id, time.monotonic() + args.timeout, c)
        res["workflows"] = n
        ident: Callable[[int], int] = lambda i: i  # noqa: E731
        if workload == "chain":
            t = b.closed_loop(res, bench_chain, n, CHAIN_LENGTH, ident, lambda i: i + CHAIN_LENGTH, c)
        elif workload == "multiapp":
            t = b.closed_loop(res, bench_multiapp, n, CHAIN_LENGTH, ident, lambda i: i + CHAIN_LENGTH, c)
        elif workload == "fanout":
            total = sum(i * i for i in range(FANOUT_WIDTH))
            t = b.closed_loop(res, bench_fanout, n, FANOUT_WIDTH, lambda i: FANOUT_WIDTH, lambda i: total, c)
        elif workload == "latency":
            res["concurrency"] = 1  # unloaded: one at a time
            t = b.closed_loop(res, bench_single, n, 1, ident, lambda i: i + 1, 1)
        elif workload == "events":
            t = b.events(res, n)
        elif workload == "long":
            res["workflows"] = 1
            res["concurrency"] = 1
            t = b.long(res, n)
        else:
            res["workflows"] = 0
            raise ValueError(f"unknown workload {workload!r}")
        res["completed"] = t.done
        res["failures"] = t.failures
        res["errors"] = t.errors
        res["latency_ms"] = percentiles(t.latency)
        if workload not in ("events", "long"):
            res["server_latency_ms"] = percentiles(t.server)
    finally:
        client.close()  # type: ignore[no-untyped-call]
        for rt in runtimes:
            rt.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pyloadgen", description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", default="127.0.0.1:4001")
    p.add_argument("--remote", default="")
    p.add_argument("--workload", default="chain")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds")
    p.add_argument("--run-id", default=f"p{uuid.uuid4().hex[:12]}")
    p.add_argument("--tls-ca", help="dial with TLS, trusting this CA (PEM file)")
    p.add_argument(
        "--app-token", action="append", default=[], metavar="APP=PATH", help="app APP's token file"
    )
    args = p.parse_args(argv)
    args.tokens = {}
    for spec in args.app_token:
        role, _, path = spec.partition("=")
        args.tokens[role] = Path(path).read_text().strip()
    if args.tls_ca:
        # The SDK takes no root certificates: its TLS channels use grpc's default roots, which
        # grpc core reads from this file when it is set (before the first TLS channel).
        os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = os.path.abspath(args.tls_ca)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    res: dict[str, Any] = {
        "workload": args.workload,
        "driver": "python",
        "sdk": f"python-dapr@{version('dapr')}",
        "concurrency": args.concurrency,
        "workflows": 0,
        "completed": 0,
        "failures": 0,
        "errors": [],
        "activities": 0,
        "seconds": 0.0,
        "workflows_per_s": 0.0,
        "activities_per_s": 0.0,
        "latency_ms": None,
    }

    def give_up() -> None:  # a hung SDK call must not outlive --timeout
        res["failures"] = max(res["failures"], 1)
        res["errors"].append(f"timed out after {args.timeout:.0f}s")
        emit(res)
        os._exit(1)

    watchdog = threading.Timer(args.timeout + 10, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        run(args, res)
    except Exception as e:
        res["failures"] = max(res["failures"], 1)
        res["errors"].append(f"{type(e).__name__}: {e}")
    watchdog.cancel()
    if res["seconds"] > 0:
        res["workflows_per_s"] = res["completed"] / res["seconds"]
        res["activities_per_s"] = res["activities"] / res["seconds"]
    emit(res)
    code = 0 if res["failures"] == 0 and res["completed"] == res["workflows"] else 1
    # The SDK's worker threads may linger after shutdown; the result line is out, so leave now.
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
