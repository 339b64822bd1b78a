"""Python harness of the conformance suite (see conformance/README.md).

    python conformance/python/harness.py --sdk dapr   --scenario NAME --app main=H:P ... --run-id R
    python conformance/python/harness.py --sdk legacy ...
    python conformance/python/harness.py --sdk dapr --serve app3 --scenario ml_pipeline --app ...
    python conformance/python/harness.py ... --tls-ca ca.pem --app-token main=main.token ...

`dapr` is the Dapr Python SDK 1.19 (dapr.ext.workflow); `legacy` is durabletask-dapr 0.17.4.
The scenario code (scenarios.py) is written once against a small adapter (adapter.py).
With --serve APP the harness only hosts APP's workers for another harness's workflow: it prints
{"serving": APP} once they are connected and runs until SIGTERM or stdin EOF.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import Any

# Run as a script (the runner does): its sibling modules are on sys.path.
from adapter import Api, Unsupported
from more import more_scenarios
from scenarios import Run, Scenario, scenarios


def every_scenario(api: Api) -> dict[str, Scenario]:
    return {**scenarios(api), **more_scenarios(api)}


def run(api: Api, name: str, apps: dict[str, str], run_id: str) -> dict[str, Any]:
    r = Run(api, every_scenario(api)[name], name, apps, run_id)
    line: dict[str, Any] = {"scenario": name, "sdk": api.name, "instances": r.instances, "error": None}
    try:
        hosted = r.scenario.hosted
        for app in tuple(r.scenario.apps) if hosted is None else hosted:
            r.host(app)
        r.scenario.drive(r)
    except Unsupported as err:
        line["unsupported"] = str(err)
    except Exception as err:  # the line is printed whatever happened
        line["error"] = f"{type(err).__name__}: {err}"
    finally:
        r.close()
    line["instances"] = r.instances
    if r.facts:
        line["facts"] = r.facts
    return line


def serve(api: Api, name: str, app: str, apps: dict[str, str], run_id: str) -> int:
    r = Run(api, every_scenario(api)[name], name, apps, run_id)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def watch_stdin() -> None:
        sys.stdin.read()  # returns at EOF: the runner is gone
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    try:
        r.host(app)
        print(json.dumps({"serving": app}), flush=True)
        # Poll, so that the SIGTERM handler (main thread) runs promptly.
        while not stop.wait(0.5):
            pass
    finally:
        r.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sdk", choices=["dapr", "legacy"], default="dapr")
    parser.add_argument("--scenario")
    parser.add_argument("--serve", metavar="APP", help="only host APP's workers for --scenario")
    parser.add_argument("--app", action="append", default=[], help="APP=HOST:PORT")
    parser.add_argument("--run-id", default=str(int(time.time())))
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--tls-ca", metavar="PATH", help="dial with TLS, trusting this CA (PEM)")
    parser.add_argument(
        "--app-token", action="append", default=[], metavar="APP=PATH", help="the token file of app APP"
    )
    args = parser.parse_args()
    if args.tls_ca:
        # Neither SDK takes root certificates: their secure channels use grpc's default roots,
        # which grpc core reads from this file when it is set (before the first TLS channel).
        os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = os.path.abspath(args.tls_ca)
    tokens = {}
    for spec in args.app_token:
        app, _, path = spec.partition("=")
        with open(path) as f:
            tokens[app] = f.read().strip()
    api = Api(args.sdk, tls=bool(args.tls_ca), tokens=tokens)
    if args.list:
        print("\n".join(every_scenario(api)))
        return 0
    apps = dict(a.split("=", 1) for a in args.app)
    if args.serve:
        return serve(api, args.scenario, args.serve, apps, args.run_id)
    line = run(api, args.scenario, apps, args.run_id)
    print(json.dumps(line), flush=True)
    sys.stderr.flush()
    # Not sys.exit: a worker that never connected (a refused token) leaves a non-daemon retry
    # thread that no stop() ends, and it would keep the process alive after its line.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
