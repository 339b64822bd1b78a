"""python -m bench: the end-to-end benchmark, every workload against every target.

    python -m bench                                   # full scale, go driver, all targets
    python -m bench --scale smoke --targets ours-sqlite --repeat 1 --out /tmp/b
    python -m bench --endpoint main=127.0.0.1:4001,remote=127.0.0.1:4002 --endpoint-pid 1234

Each (target, workload) gets a fresh server and store; the workload runs --repeat times on that
one server process. Writes e2e.json, e2e.md and e2e.png (e2e-python.* for --driver python)
into --out, after every workload, so an interrupted run leaves what it measured. Exits 1 if a
workload failed on one of our targets (the failures of the reference and daprd are recorded).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import build, ceiling, dapr_targets, drive, report, results, targets
from bench.machine import machine_info
from bench.scales import SCALES, WORKLOADS, Size

HERE = Path(__file__).resolve().parent
ALL_TARGETS = ("ours-sqlite", "ours-mongo", "reference", "daprd-sqlite", "daprd-mongo")
COMPARISONS = ("reference", "daprd-sqlite", "daprd-mongo")  # their failures do not fail the run


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _list(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in allowed]
    if unknown or not items:
        raise argparse.ArgumentTypeError(f"{what}: expected some of {', '.join(allowed)}, got {value!r}")
    return items


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="full")
    p.add_argument(
        "--targets", default=None, help=f"comma-separated: {', '.join(ALL_TARGETS)} (default: all)"
    )
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated (default: all)")
    p.add_argument("--repeat", type=int, default=3, help="runs per workload on one server process")
    p.add_argument("--driver", choices=("go", "python"), default="go")
    p.add_argument("--count", action="append", default=[], metavar="WORKLOAD=N", help="override a size")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--endpoint", help="bench a running sidecar: main=H:P[,remote=H:P]")
    p.add_argument("--endpoint-pid", type=int, help="its pid, for memory readings")
    p.add_argument("--tls-ca", type=Path, help="--endpoint is TLS: trust this CA (PEM)")
    p.add_argument("--api-token-file", type=Path, help="--endpoint: a server-wide token, sent by every app")
    p.add_argument(
        "--app-token-file",
        action="append",
        default=[],
        metavar="APP=PATH",
        help="--endpoint: app APP's token",
    )
    p.add_argument("--mongodb-url", help="an existing replica set for ours-mongo (default: start one)")
    p.add_argument("--ceiling-seconds", type=float, help="MongoDB ceiling duration (default 10 full, 2 else)")
    args = p.parse_args(argv)
    try:
        args.workloads = _list(args.workloads, WORKLOADS, "--workloads")
        if args.endpoint:
            args.endpoints = targets.parse_endpoints(args.endpoint)
            args.targets = ["endpoint"]
            args.client_args = targets.security_args(
                list(args.endpoints), args.tls_ca, args.api_token_file, args.app_token_file
            )
        elif args.tls_ca or args.api_token_file or args.app_token_file:
            raise ValueError("--tls-ca and the token files are for --endpoint")
        else:
            args.targets = _list(args.targets or ",".join(ALL_TARGETS), ALL_TARGETS, "--targets")
        sizes = dict(SCALES[args.scale])
        for item in args.count:
            name, _, n = item.partition("=")
            if name not in sizes or not n.isdigit() or int(n) < 1:
                raise argparse.ArgumentTypeError(f"--count: expected WORKLOAD=N, got {item!r}")
            sizes[name] = dataclasses.replace(sizes[name], count=int(n))
        args.sizes = sizes
    except (argparse.ArgumentTypeError, ValueError) as e:
        p.error(str(e))
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        stem = "e2e" if args.driver == "go" else f"e2e-{args.driver}"
        self.out_json = args.out / f"{stem}.json"
        self.out_md = args.out / f"{stem}.md"
        self.out_png = args.out / f"{stem}.png"
        self.work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
        self.loadgen: Path | None = None
        if importlib.util.find_spec("matplotlib") is None:
            log("matplotlib is not installed (pip install -e '.[bench]'): no chart")
        self.doc: dict[str, Any] = {
            "config": {
                "scale": args.scale,
                "repeat": args.repeat,
                "driver": args.driver,
                "targets": args.targets,
                "workloads": args.workloads,
            },
            "sizes": {w: dataclasses.asdict(s) for w, s in args.sizes.items() if w in args.workloads},
            "machine": machine_info(),
            "targets": {},
            "mongo_ceiling": None,
            "results": {t: {} for t in args.targets},
        }

    def write(self) -> None:
        """e2e.json, e2e.md and e2e.png; the chart needs matplotlib (pip install -e '.[bench]')."""
        self.args.out.mkdir(parents=True, exist_ok=True)
        self.doc["machine"]["load_average_end"] = list(os.getloadavg())
        self.out_json.write_text(json.dumps(self.doc, indent=2) + "\n")
        self.out_md.write_text(report.markdown(self.doc))
        try:
            drawn = report.chart(self.doc, self.out_png)
        except Exception as e:  # a chart is a convenience: never lose the results over it
            log(f"no chart: {type(e).__name__}: {e}")
        else:
            if not drawn:
                self.out_png.unlink(missing_ok=True)  # no stale chart next to new tables

    def make_target(self, name: str) -> targets.Target:
        ours_info: dict[str, object] = {"version": self.doc["machine"]["commit"]}
        if name == "ours-sqlite":
            return targets.Ours(name, targets.sqlite_store, {**ours_info, "store": "sqlite (file)"})
        if name == "ours-mongo":
            stores = targets.MongoStores(self.args.mongodb_url)
            target = targets.OursMongo(stores, {**ours_info, "store": "mongodb (single-node replica set)"})
            self.measure_ceiling(stores.url)
            return target
        if name == "reference":
            binary = build.build_reference()
            return targets.Reference(binary, _reference_version())
        if name in ("daprd-sqlite", "daprd-mongo"):
            binaries = build.build_dapr()  # once per dapr version: minutes the first time
            mongo = None
            if name == "daprd-mongo":
                mongo = targets.MongoStores(self.args.mongodb_url)
                if not self.doc["mongo_ceiling"]:
                    self.measure_ceiling(mongo.url)
            return dapr_targets.Daprd(name.removeprefix("daprd-"), binaries, build.dapr_version(), mongo)
        return targets.Endpoint(self.args.endpoints, self.args.endpoint_pid, self.args.client_args)

    def measure_ceiling(self, url: str) -> None:
        seconds = self.args.ceiling_seconds or (10.0 if self.args.scale == "full" else 2.0)
        log(f"MongoDB ceiling: {seconds:.0f}s of majority updates")
        try:
            self.doc["mongo_ceiling"] = ceiling.measure(url, seconds)
            log(f"MongoDB ceiling: {self.doc['mongo_ceiling']['ops_per_s']:.0f} updates/s")
        except Exception as e:  # the ceiling is context, not a result: record and go on
            self.doc["mongo_ceiling"] = {"error": f"{type(e).__name__}: {e}"}

    def run_workload(self, target: targets.Target, workload: str) -> dict[str, Any]:
        size: Size = self.args.sizes[workload]
        if not target.supports(workload):
            return {"status": "n/a", "problems": [f"{target.name} has no second app ID"], "runs": []}
        try:
            server = target.start(workload, self.work)
        except (targets.TargetError, OSError) as e:
            return {"status": "error", "problems": [str(e)], "runs": []}
        runs: list[dict[str, Any]] = []
        expected = 1 if workload == "long" else size.count
        try:
            for i in range(1, self.args.repeat + 1):
                cmd = drive.command(
                    self.args.driver,
                    self.loadgen,
                    server.endpoints,
                    workload,
                    size.count,
                    size.concurrency,
                    size.timeout,
                    server.client_args,
                )
                run_log = self.work / f"{target.name}-{workload}-{i}.log"
                run = drive.run_once(cmd, server, size.timeout, run_log)
                runs.append(run)
                found = results.problems(run, expected)
                log(f"{target.name} {workload} run {i}/{self.args.repeat}: " + _brief(run, found))
                if found:
                    run["log"] = str(run_log)  # kept: the work dir survives a failure
                    break  # the next runs would only repeat the failure (or its timeout)
        finally:
            server.stop()
        return {**results.judge(runs, expected), "runs": runs}

    def run(self) -> int:
        if self.args.driver == "go":
            self.loadgen = build.build_loadgen()
        log(f"scale {self.args.scale}, driver {self.args.driver}, logs in {self.work}")
        for name in self.args.targets:
            try:
                target = self.make_target(name)
            except (targets.TargetError, build.BuildError) as e:
                log(f"{name}: {e}")
                for w in self.args.workloads:
                    self.doc["results"][name][w] = {"status": "error", "problems": [str(e)], "runs": []}
                self.write()
                continue
            self.doc["targets"][name] = target.describe()
            try:
                for w in self.args.workloads:
                    self.doc["results"][name][w] = self.run_workload(target, w)
                    self.write()
            finally:
                target.close()
        self.write()
        failed = [
            (t, w)
            for t, per in self.doc["results"].items()
            for w, entry in per.items()
            if entry["status"] in ("failed", "error")
        ]
        log(f"wrote {self.out_json}, {self.out_md}")
        if failed:
            log(f"FAILED: {', '.join(f'{t}/{w}' for t, w in failed)} (logs in {self.work})")
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        # The comparisons' failures are their own: recorded, but they do not fail the run.
        return 1 if any(t not in COMPARISONS for t, _ in failed) else 0


def _brief(run: dict[str, Any], found: list[str]) -> str:
    if found:
        return "FAILED: " + "; ".join(found)[:500]
    lat = run.get("latency_ms") or {}
    return (
        f"{run['workflows_per_s']:.1f} workflows/s, {run['activities_per_s']:.0f} activities/s, "
        f"p50 {lat.get('p50', 0):.1f} ms, p99 {lat.get('p99', 0):.1f} ms in {run['seconds']:.1f}s"
    )


def _reference_version() -> str:
    for line in (HERE / "reference" / "go.mod").read_text().splitlines():
        parts = line.split()  # "github.com/dapr/durabletask-go v0.14.0 // indirect"
        if len(parts) > 1 and parts[0] == build.REFERENCE_MODULE:
            return f"{build.REFERENCE_MODULE} {parts[1]}"
    return build.REFERENCE_MODULE


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    try:
        return bench.run()
    except build.BuildError as e:
        log(str(e))
        return 2
