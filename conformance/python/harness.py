"""Python harness of the conformance suite (see conformance/README.md).

    python conformance/python/harness.py --sdk dapr   --scenario NAME --app main=H:P ... --run-id R
    python conformance/python/harness.py --sdk legacy ...
    python conformance/python/harness.py --sdk dapr --serve app3 --scenario ml_pipeline --app ...

`dapr` is the Dapr Python SDK 1.19 (dapr.ext.workflow); `legacy` is durabletask-dapr 0.17.4.
The scenario code (scenarios.py) is written once against a small adapter (adapter.py).
With --serve APP the harness only hosts APP's workers for another harness's workflow: it prints
{"serving": APP} once they are connected and runs until SIGTERM or stdin EOF.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import Any

# Run as a script (the runner does): its sibling modules are on sys.path.
from adapter import Api, Unsupported
from scenarios import Run, scenarios


def run(api: Api, name: str, apps: dict[str, str], run_id: str) -> dict[str, Any]:
    r = Run(api, scenarios(api)[name], name, apps, run_id)
    line: dict[str, Any] = {"scenario": name, "sdk": api.name, "instances": r.instances, "error": None}
    try:
        for app in r.scenario.hosted or tuple(r.scenario.apps):
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
    r = Run(api, scenarios(api)[name], name, apps, run_id)
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
    args = parser.parse_args()
    api = Api(args.sdk)
    if args.list:
        print("\n".join(scenarios(api)))
        return 0
    apps = dict(a.split("=", 1) for a in args.app)
    if args.serve:
        return serve(api, args.scenario, args.serve, apps, args.run_id)
    line = run(api, args.scenario, apps, args.run_id)
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
