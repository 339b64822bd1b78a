"""dapr-ext-workflow harness of the conformance suite (see conformance/README.md).

    <venv>/bin/python conformance/python-ext/harness.py --scenario NAME --app main=H:P ... --run-id R

The Python SDK's separate workflow extension, `dapr-ext-workflow` 1.18.3 with `dapr` 1.18.3 (the
durabletask client it ships is vendored inside it), in a venv of its own: the test extra's
dapr 1.19 ships `dapr.ext.workflow` in its core wheel and the two cannot share one environment.
The runner makes that venv (requirements.txt) in conformance/.build/python-ext-venv.

It plays the Python harness's scenarios (conformance/python/scenarios.py) but configures the SDK
the way a Dapr app is configured: `WorkflowRuntime()` and `DaprWorkflowClient()` get no host or
port; they read dapr's settings, i.e. DAPR_GRPC_ENDPOINT (`https://` for TLS) and
DAPR_API_TOKEN of the app's environment. One process plays several app IDs here, so the
harness sets those settings for each construction, as each app's own environment would.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))

import harness  # conformance/python/harness.py: run and serve
from adapter import TOKEN_HEADER, Api, Unsupported
from scenarios import scenarios


def _copy(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A fresh function object with fn's code: 1.18.3 marks a registered function and refuses
    it on a second runtime, but here one process plays several apps (in production each app is
    a process of its own)."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__qualname__, copy.__kwdefaults__ = fn.__qualname__, fn.__kwdefaults__
    return copy


class _Client:
    """DaprWorkflowClient; a call 1.18.3 does not have is reported as n/a, naming it."""

    def __init__(self, inner: Any, sdk: str) -> None:
        self._inner, self._sdk = inner, sdk

    def __getattr__(self, name: str) -> Any:
        if not hasattr(self._inner, name):
            raise Unsupported(f"{self._sdk}'s DaprWorkflowClient has no {name}")
        return getattr(self._inner, name)


class _Runtime:
    """WorkflowRuntime; its registrations get a fresh function object each (see _copy)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def register_workflow(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        return self._inner.register_workflow(_copy(fn), **kwargs)

    def register_activity(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        return self._inner.register_activity(_copy(fn), **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _EnvConfigured:
    """dapr.ext.workflow as the Python adapter sees it, except that its two constructors ignore
    the host, port and interceptors the adapter passes: they run with dapr's settings set to the
    app's environment (DAPR_GRPC_ENDPOINT, DAPR_API_TOKEN) and get no arguments for them."""

    def __init__(self, wf: Any, sdk: str) -> None:
        self._wf, self._sdk = wf, sdk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wf, name)

    @contextmanager
    def _app_environment(self, host: str, port: str, token: str | None) -> Iterator[None]:
        from dapr.conf import settings

        port, _, query = port.partition("?")
        scheme = "https" if "tls=true" in query else "http"
        # Read and restored through __dict__: dapr's Settings recurses on a deleted name, and
        # the Python adapter deletes DAPR_API_TOKEN after making a client.
        saved = {k: vars(settings).get(k) for k in ("DAPR_GRPC_ENDPOINT", "DAPR_API_TOKEN")}
        settings.DAPR_GRPC_ENDPOINT = f"{scheme}://{host}:{port}"
        settings.DAPR_API_TOKEN = token if token is not None else saved["DAPR_API_TOKEN"]
        try:
            yield
        finally:
            for k, v in saved.items():
                setattr(settings, k, v)

    def WorkflowRuntime(
        self, host: str, port: str, interceptors: list[Any] | None = None, **kwargs: Any
    ) -> Any:
        # The adapter hands an app's token as a TokenInterceptor; the SDK reads it from settings.
        token = next((dict(i._metadata).get(TOKEN_HEADER) for i in interceptors or ()), None)
        with self._app_environment(host, port, token):
            return _Runtime(self._wf.WorkflowRuntime(**kwargs))

    def DaprWorkflowClient(self, host: str, port: str, **kwargs: Any) -> Any:
        # The adapter has already set settings.DAPR_API_TOKEN for this construction.
        with self._app_environment(host, port, None):
            return _Client(self._wf.DaprWorkflowClient(**kwargs), self._sdk)


class ExtApi(Api):
    """The Python harness's adapter over dapr-ext-workflow, dialed only through dapr's settings."""

    def __init__(self, *, tls: bool, tokens: dict[str, str]) -> None:
        super().__init__("dapr", tls=tls, tokens=tokens)
        self.name = f"python-ext@{version('dapr-ext-workflow')}"
        self.wf = _EnvConfigured(self.wf, self.name)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario")
    parser.add_argument("--serve", metavar="APP", help="only host APP's workers for --scenario")
    parser.add_argument("--app", action="append", default=[], help="APP=HOST:PORT")
    parser.add_argument("--run-id", default=str(int(time.time())))
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--tls-ca", metavar="PATH", help="dial with TLS, trusting this CA (PEM)")
    parser.add_argument("--app-token", action="append", default=[], metavar="APP=PATH")
    args = parser.parse_args()
    if args.tls_ca:
        # The SDK takes no root certificates: grpc core reads its default roots from here.
        os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = os.path.abspath(args.tls_ca)
    tokens = {}
    for spec in args.app_token:
        app, _, path = spec.partition("=")
        tokens[app] = Path(path).read_text().strip()
    api = ExtApi(tls=bool(args.tls_ca), tokens=tokens)
    if args.list:
        print("\n".join(scenarios(api)))
        return 0
    apps = dict(a.split("=", 1) for a in args.app)
    if args.serve:
        return harness.serve(api, args.scenario, args.serve, apps, args.run_id)
    print(json.dumps(harness.run(api, args.scenario, apps, args.run_id)), flush=True)
    sys.stderr.flush()
    os._exit(0)  # as harness.py: a never-connected worker's retry thread must not hold the exit


if __name__ == "__main__":
    sys.exit(main())
