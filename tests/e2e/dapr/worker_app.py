"""A dapr.ext.workflow worker run as a subprocess, so tests can SIGKILL it mid-activity.

    python worker_app.py --port PORT --mode slow|fast --marker-dir DIR

Registers `kill_wf` (step1 -> slow_step). In `slow` mode `slow_step` records that it
started and then hangs; in `fast` mode it returns at once. `step1` appends the mode to
DIR/step1.log each time it runs, so the test can see it ran exactly once.
Prints `worker-ready` once the work-item stream is open; SIGTERM shuts down cleanly.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from pathlib import Path

from dapr.ext.workflow import WorkflowRuntime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", required=True)
    ap.add_argument("--mode", choices=["slow", "fast"], required=True)
    ap.add_argument("--marker-dir", required=True)
    args = ap.parse_args()
    marker = Path(args.marker_dir)
    marker.mkdir(parents=True, exist_ok=True)

    def step1(ctx, x):
        with open(marker / "step1.log", "a") as f:
            f.write(f"{args.mode}\n")
        return x + 1

    def slow_step(ctx, x):
        (marker / f"slow-started-{args.mode}").write_text(str(os.getpid()))
        if args.mode == "slow":
            time.sleep(3600)
        return f"done-by-{args.mode}:{x}"

    def kill_wf(ctx, x):
        a = yield ctx.call_activity(step1, input=x)
        b = yield ctx.call_activity(slow_step, input=a)
        return b

    rt = WorkflowRuntime(host=args.host, port=str(args.port))
    rt.register_workflow(kill_wf)
    rt.register_activity(step1)
    rt.register_activity(slow_step)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    rt.start()
    print(f"worker-ready mode={args.mode} pid={os.getpid()}", flush=True)
    stop.wait()
    rt.shutdown()
    print("worker-stopped", flush=True)


if __name__ == "__main__":
    main()
