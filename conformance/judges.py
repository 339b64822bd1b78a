"""Expectation kinds of scenario.json beyond status, output and event counts (runner.py).

Per instance role:
  - `history_at_least`: {kind: n}, at least n events of that kind (retries whose number
    depends on timing, like attempts made before a worker appeared);
  - `events_in_order`: an event name; the eventRaised events of that name in the recorded
    history carry increasing numbers (their JSON inputs), i.e. they were recorded in raise order;
  - `patches`: the patch names recorded on the instance's turns (WorkflowStarted.version), all
    turns together.

Top level:
  - `sdk_bugs`: {sdk column: {"bug": why, "problems_contain": [text, ...]}}: a run of that SDK
    whose every problem contains one of the texts failed the way the SDK's named bug makes it fail; the table
    shows "SDK bug", neither pass nor fail. Other columns still judge the scenario in full.
  - `workflow_sends`: {"app": APP, "min_sends": n}, judged from the log of the server the runner
    started: the worker streams of APP that connected during the scenario, and how many workflow
    work items went out with the whole history (`full`) or as stateful-history deltas (`delta`).
    A stream that announced WORKER_CAPABILITY_STATEFUL_HISTORY gets at most two full sends (a new
    instance's first turn has no past to cache) and deltas after them; a stream that did not
    gets no delta at all.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STREAM_WAIT = 15.0  # seconds for the server to log the close of a harness's streams
_CONNECTED = re.compile(r"worker stream (\d+) of app (\S+) connected: stateful=(True|False)")
_CLOSED = re.compile(
    r"worker stream (\d+) of app (\S+) closed: stateful=(True|False) workflow_sends full=(\d+) delta=(\d+)"
)


def history_problems(events: list[Any], expect: dict[str, Any]) -> list[str]:
    problems = []
    kinds = [e.WhichOneof("eventType") for e in events]
    for kind, least in expect.get("history_at_least", {}).items():
        if kinds.count(kind) < least:
            problems.append(f"history has {kinds.count(kind)} {kind}, expected at least {least}")
    name = expect.get("events_in_order")
    if name:
        seen = []
        for e in events:
            if e.HasField("eventRaised") and e.eventRaised.name == name:
                try:
                    seen.append(json.loads(e.eventRaised.input.value))
                except json.JSONDecodeError:
                    seen.append(e.eventRaised.input.value)
        if not seen:
            problems.append(f"history has no eventRaised {name!r}")
        elif seen != sorted(seen) or len(set(map(str, seen))) != len(seen):
            problems.append(f"eventRaised {name!r} recorded out of raise order: {seen}")
    if "patches" in expect:
        recorded = sorted(
            {p for e in events if e.HasField("workflowStarted") for p in e.workflowStarted.version.patches}
        )
        if recorded != sorted(expect["patches"]):
            problems.append(
                f"patches recorded on the turns are {recorded}, expected {sorted(expect['patches'])}"
            )
    return problems


@dataclass
class Sends:
    stream: int
    stateful: bool
    full: int
    delta: int


def log_offset(log: Path | None) -> int:
    return log.stat().st_size if log is not None and log.exists() else 0


def streams_of(log: Path, offset: int, app: str, wait: float = STREAM_WAIT) -> tuple[list[Sends], list[int]]:
    """The streams of `app` that connected after `offset` in the server log, once each has
    logged its close (waiting up to `wait` s); and the IDs of those that never did."""
    deadline = time.monotonic() + wait
    while True:
        with log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        opened = [int(m[1]) for m in _CONNECTED.finditer(text) if m[2] == app]
        closed = {
            int(m[1]): Sends(int(m[1]), m[3] == "True", int(m[4]), int(m[5]))
            for m in _CLOSED.finditer(text)
            if m[2] == app
        }
        open_ = [s for s in opened if s not in closed]
        if not open_ or time.monotonic() > deadline:
            return [closed[s] for s in opened if s in closed], open_
        time.sleep(0.1)


def sends_problems(
    spec: dict[str, Any], streams: list[Sends], still_open: list[int]
) -> tuple[list[str], str]:
    """Problems with the scenario's `workflow_sends`, and a short note for the table."""
    want = int(spec.get("min_sends", 1))
    problems = [f"stream {s} never logged its close" for s in still_open]
    used = [s for s in streams if s.full or s.delta]
    if not used:
        return [*problems, f"no workflow work item was sent to app {spec.get('app', 'main')}"], ""
    full = sum(s.full for s in used)
    delta = sum(s.delta for s in used)
    stateful = [s for s in used if s.stateful]
    if full + delta < want:
        problems.append(f"{full + delta} workflow work items sent, expected at least {want}")
    for s in used:
        # A new instance's first turn has no past, so the worker's cache holds nothing the
        # second turn could be a delta of: the first one or two sends are full (PROTOCOL.md).
        if s.stateful and (s.full > 2 or not s.delta):
            problems.append(f"stateful stream {s.stream} got {s.full} full histories and {s.delta} deltas")
        if not s.stateful and s.delta:
            problems.append(f"stream {s.stream} did not announce stateful history but got {s.delta} deltas")
    kind = "stateful" if stateful else "stateless"
    return problems, f"{kind}: {full} full, {delta} delta"


def known_sdk_bug(spec: dict[str, Any], sdk: str, problems: list[str]) -> str:
    """The `sdk_bugs` entry that explains every one of `problems` for `sdk` ("" if none)."""
    entry = spec.get("sdk_bugs", {}).get(sdk.split("@")[0])
    if not entry or not problems:
        return ""
    allowed = entry["problems_contain"]
    allowed = [allowed] if isinstance(allowed, str) else allowed
    if all(any(text in p for text in allowed) for p in problems):
        return str(entry["bug"])
    return ""
