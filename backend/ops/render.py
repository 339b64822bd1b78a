"""Output of the operator commands: tables that fit a terminal, JSON and YAML for scripts,
human durations ("5m3s"), and the Dapr CLI's duration-or-timestamp arguments."""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from backend.ops.connect import USAGE, CommandError

_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta | None:
    """A Go duration (300ms, 1.5h, 2h45m); None if `text` is not one."""
    if not text or _GO_DURATION.sub("", text) != "":
        return None
    return timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in _GO_DURATION.findall(text)))


def parse_moment(text: str, *, flag: str, past: bool, now: datetime | None = None) -> datetime:
    """A duration from now (into the past or the future) or a time: 2023-01-02T15:04:05[Z|±hh:mm]
    or 2023-01-02 (UTC when no zone is given)."""
    now = now or datetime.now(UTC)
    span = parse_duration(text)
    if span is not None:
        return now - span if past else now + span
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(
            USAGE,
            f"{flag} {text!r}: expected a duration (300ms, 1.5h, 2h45m) or a time (2023-01-02T15:04:05Z)",
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def human(seconds: float) -> str:
    """Like kubectl's ages: 45s, 5m3s, 42m, 5h4m, 30h, 3d4h, 12d."""
    s = int(max(0.0, seconds))
    if seconds < 1 and seconds > 0:
        return f"{int(seconds * 1000)}ms"
    if s < 120:
        return f"{s}s"
    m, h, d = s // 60, s // 3600, s // 86400
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if h < 3:
        return f"{m}m"
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    return f"{d}d"


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def clip(text: str, limit: int) -> str:
    one_line = text.replace("\r", "").replace("\n", " ")
    return one_line if limit <= 0 or len(one_line) <= limit else one_line[: limit - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, out: TextIO = sys.stdout) -> None:
    """Columns padded to their widest cell; the last column is cut to the terminal's width."""
    cells = [list(headers), *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    room = shutil.get_terminal_size((200, 24)).columns
    for row in cells:
        line = "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True))
        line = (line + "  " if line else "") + row[-1]
        out.write((line if len(line) <= room or not out.isatty() else line[: room - 1] + "…").rstrip() + "\n")


def dump(data: Any, fmt: str, *, out: TextIO = sys.stdout) -> None:
    if fmt == "json":
        out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        return
    import yaml  # PyYAML: only the yaml format needs it

    out.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
