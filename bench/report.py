"""e2e.md (tables) and e2e.png (bar charts) from the e2e.json document.

python -m bench.report bench/results/e2e.json     # redraw both from the raw figures
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.scales import DESCRIPTIONS


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits + 1 if value < 10 else digits}f}"


def _median(summary: dict[str, Any] | None, key: str) -> float | None:
    entry = (summary or {}).get(key)
    return entry["median"] if entry else None


def _mb(kb: float | None) -> float | None:
    return None if kb is None else kb / 1024


def _cell_failure(entry: dict[str, Any]) -> str:
    text = "; ".join(entry.get("problems") or []) or entry["status"]
    text = text.replace("|", "/").replace("\n", " ")
    return f"**{entry['status'].upper()}**: {text[:160]}"


def markdown(doc: dict[str, Any]) -> str:
    cfg, machine = doc["config"], doc["machine"]
    results: dict[str, dict[str, Any]] = doc["results"]
    targets = list(results)
    workloads = cfg["workloads"]
    lines = [
        f"Measured {machine['date']} on {machine['nproc']} x {machine['cpu_model']}, "
        f"{machine['memory_gb']} GB (load average at start {_load(machine)}); commit {machine['commit']}; "
        f"driver `{cfg['driver']}`; scale `{cfg['scale']}`; {cfg['repeat']} run(s) per workload on one server "
        "process (median, and every run in order). Latency is client side, from scheduling to the "
        "completion observed; *server p50* is the instance's last-updated minus created timestamps; "
        "*server CPU s* is the server process's CPU time (all threads) during one run.",
        "",
        "| workload | target | workflows/s | runs (workflows/s, in order) | activities/s | p50 ms | p95 ms "
        "| p99 ms | server p50 ms | server CPU s | peak RSS MB | workflows/s vs reference "
        "| workflows/s vs daprd, same store |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in workloads:
        ref = _median((results.get("reference", {}).get(w) or {}).get("summary"), "workflows_per_s")
        daprd = {
            t: _median(
                (results.get(f"daprd-{t.removeprefix('ours-')}", {}).get(w) or {}).get("summary"),
                "workflows_per_s",
            )
            for t in ("ours-sqlite", "ours-mongo")
        }
        for t in targets:
            entry = results[t].get(w)
            if entry is None:
                continue
            if entry["status"] == "n/a":
                lines.append(f"| {w} | {t} | n/a | | | | | | | | | | |")
                continue
            if entry["status"] != "ok":
                lines.append(f"| {w} | {t} | {_cell_failure(entry)} | | | | | | | | | | |")
                continue
            s = entry["summary"]
            wps = _median(s, "workflows_per_s")
            runs = ", ".join(_num(v) for v in s["workflows_per_s"]["runs"])
            ratio = f"{wps / ref:.2f}x" if ref and wps is not None and t != "reference" else ""
            vs_daprd = daprd.get(t)
            ratio_daprd = f"{wps / vs_daprd:.2f}x" if vs_daprd and wps is not None else ""
            lines.append(
                f"| {w} | {t} | {_num(wps)} | {runs} | {_num(_median(s, 'activities_per_s'))} "
                f"| {_num(_median(s, 'latency_ms.p50'))} | {_num(_median(s, 'latency_ms.p95'))} "
                f"| {_num(_median(s, 'latency_ms.p99'))} | {_num(_median(s, 'server_latency_ms.p50'))} "
                f"| {_num(_median(s, 'server_cpu_s'))} | {_num(_mb(_median(s, 'memory_after.peak_kb')))} | {ratio} | {ratio_daprd} |"
            )
    lines += _events_section(doc, targets) + _long_section(doc, targets) + _mongo_section(doc, targets)
    lines += _ceiling_section(doc)
    if "reference" in results:
        lines += [
            "",
            "The reference sidecar's StartInstance waits for the instance to start, and its "
            "WaitForInstanceStart/Completion poll its store (first after 100 ms, then backing off "
            "x1.5 up to 10 s): its client-side latency, and so its closed-loop workflows/s, include "
            "that polling; its *server p50* does not. It hosts one app ID, so `multiapp` is n/a.",
        ]
    lines += ["", "Workloads: " + "; ".join(f"**{w}**: {DESCRIPTIONS[w]}" for w in workloads) + "."]
    return "\n".join(lines) + "\n"


def _load(machine: dict[str, Any]) -> str:
    load = machine.get("load_average")
    return ", ".join(f"{x:.2f}" for x in load) if load else "?"


def _events_section(doc: dict[str, Any], targets: list[str]) -> list[str]:
    rows = []
    for t in targets:
        entry = doc["results"][t].get("events")
        if not entry or entry["status"] != "ok":
            continue
        s = entry["summary"]
        rows.append(
            f"| {t} | {doc['sizes']['events']['count']:,} | {_num(_mb(_median(s, 'memory_waiting.rss_kb')))} "
            f"| {_num(_median(s, 'start_seconds'))} | {_num(_median(s, 'seconds'))} |"
        )
    if not rows:
        return []
    return [
        "",
        "**events**: server memory with every instance parked on its event.",
        "",
        "| target | workflows in flight | RSS while waiting MB | start all and see them running, s "
        "| raise all and see them complete, s |",
        "|---|---|---|---|---|",
        *rows,
    ]


def _long_section(doc: dict[str, Any], targets: list[str]) -> list[str]:
    series = {}
    for t in targets:
        entry = doc["results"][t].get("long")
        if entry and entry["status"] == "ok" and entry["summary"].get("turns"):
            series[t] = entry["summary"]["turns"]
    if not series:
        return []
    first = next(iter(series.values()))
    lines = [
        "",
        f"**long**: mean ms per turn (activity to next activity) by position in one workflow of "
        f"{doc['sizes']['long']['count']:,} activities; flat means a turn does not slow down as the history grows.",
        "",
        "| activities | " + " | ".join(series) + " |",
        "|---|" + "---|" * len(series),
    ]
    for i, bucket in enumerate(first):
        cells = " | ".join(_num(s[i]["mean_ms"]) if i < len(s) else "-" for s in series.values())
        lines.append(f"| {bucket['from_activity']}-{bucket['to_activity'] - 1} | {cells} |")
    # The split of the cost over the whole run: a server whose CPU per activity stays flat while
    # the turn time grows leaves the growth to the SDK (it replays the whole history every turn).
    count = doc["sizes"]["long"]["count"]
    for key, label in (("server_cpu_s", "server"), ("loadgen_cpu_s", "load generator")):
        row = []
        for t in series:
            cpu = _median(doc["results"][t]["long"]["summary"], key)
            row.append(_num(1000 * cpu / count) if cpu is not None else "-")
        lines.append(f"| {label} CPU ms per activity (whole run) | {' | '.join(row)} |")
    return lines


SEQUENTIAL = ("chain", "latency", "long", "multiapp")  # one turn per activity result, plus the first


def _mongo_section(doc: dict[str, Any], targets: list[str]) -> list[str]:
    """Per workflow: server and mongod CPU, MongoDB operations and transactions (serverStatus)."""
    rows = []
    for w in doc["config"]["workloads"]:
        for t in targets:
            entry = doc["results"][t].get(w)
            if not entry or entry["status"] != "ok" or _median(entry["summary"], "mongo.ops.total") is None:
                continue
            s = entry["summary"]
            by_kind = {
                k: _median(s, f"mongo.ops.{k}")
                for k in ("insert", "query", "update", "delete", "getmore", "command")
            }
            kinds = ", ".join(f"{k} {_num(n / _workflows(doc, w))}" for k, n in by_kind.items() if n)
            per_step = _median(s, "per_turn_or_result.mongo_ops") if w in SEQUENTIAL else None
            rows.append(
                f"| {w} | {t} | {_num(_median(s, 'per_workflow.server_cpu_ms'))} "
                f"| {_num(_median(s, 'per_workflow.mongod_cpu_ms'))} | {_num(_median(s, 'per_workflow.mongo_ops'))} "
                f"| {_num(_median(s, 'per_workflow.mongo_transactions'))} | {_num(per_step, 1)} | {kinds} |"
            )
    if not rows:
        return []
    return [
        "",
        "**MongoDB cost per workflow** (medians over the runs; operations and committed transactions "
        "are mongod's serverStatus opcounters and transactions counters, sampled before and after each "
        "run; *per turn or result* divides by one turn per activity result plus the first turn and one "
        "per activity result, i.e. workflows + 2 x activities, sequential workloads only).",
        "",
        "| workload | target | server CPU ms | mongod CPU ms | operations | transactions "
        "| operations per turn or result | operations by kind |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def _workflows(doc: dict[str, Any], workload: str) -> int:
    return 1 if workload == "long" else int(doc["sizes"][workload]["count"])


def _ceiling_section(doc: dict[str, Any]) -> list[str]:
    c = doc.get("mongo_ceiling")
    if not c:
        return []
    if "error" in c:
        return ["", f"MongoDB ceiling: not measured ({c['error']})."]
    one = c["one_at_a_time"]
    lines = [
        "",
        f"**MongoDB ceiling** (the first MongoDB target's mongod, {c['write_concern']}): "
        f"{_num(c['ops_per_s'])} single-document updates/s with {c['in_flight']} in flight, "
        f"{_num(one['ops_per_s'])}/s one at a time ({_num(one['mean_ms'], 2)} ms each). "
        "Each activity costs ours-mongo at least two such commits (its result, the next turn).",
    ]
    mongo = doc["results"].get("ours-mongo", {})
    rows = []
    for w in ("chain", "latency", "long", "multiapp"):  # sequential: a turn per activity, plus the first
        entry = mongo.get(w)
        if entry and entry["status"] == "ok":
            aps = _median(entry["summary"], "activities_per_s") or 0
            wps = _median(entry["summary"], "workflows_per_s") or 0
            rows.append(f"{w} {_num(aps + wps)}")
    if rows:
        lines.append(f"ours-mongo workflow turns/s (activities/s + workflows/s): {', '.join(rows)}.")
    return lines


def chart(doc: dict[str, Any], path: Path) -> bool:
    """Writes the PNG; False when there is nothing to draw or matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: files only
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    results = doc["results"]
    targets = list(results)
    workloads = doc["config"]["workloads"]
    if not any(entry["status"] == "ok" for per in results.values() for entry in per.values()):
        return False  # nothing measured: no chart
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5))
    width = 0.8 / max(1, len(targets))
    for k, t in enumerate(targets):
        xs, wps, lo, hi, p50, p99 = [], [], [], [], [], []
        for i, w in enumerate(workloads):
            entry = results[t].get(w)
            if not entry or entry["status"] != "ok":
                continue
            s = entry["summary"]["workflows_per_s"]
            xs.append(i + k * width)
            wps.append(s["median"])
            lo.append(s["median"] - s["min"])
            hi.append(s["max"] - s["median"])
            p50.append(_median(entry["summary"], "latency_ms.p50") or 0)
            p99.append(_median(entry["summary"], "latency_ms.p99") or 0)
        left.bar(xs, wps, width, yerr=[lo, hi], label=t, capsize=2)
        right.bar(xs, p50, width, label=f"{t} p50")
        right.scatter(xs, p99, marker="_", s=200, color="black", zorder=3, label="p99" if k == 0 else None)
    for ax, title in (
        (left, "workflows/s (median, min-max)"),
        (right, "latency ms, client side (p50 bars, p99 marks)"),
    ):
        ax.set_xticks([i + width * (len(targets) - 1) / 2 for i in range(len(workloads))], workloads)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend(fontsize="small")
    cfg = doc["config"]
    fig.suptitle(
        f"durabletask sidecars, driver {cfg['driver']}, scale {cfg['scale']}, {doc['machine']['nproc']} cores"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.report PATH/e2e.json", file=sys.stderr)
        return 2
    path = Path(argv[0])
    doc = json.loads(path.read_text())
    path.with_suffix(".md").write_text(markdown(doc))
    if not chart(doc, path.with_suffix(".png")):
        print("no chart (nothing measured, or matplotlib is not installed)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
