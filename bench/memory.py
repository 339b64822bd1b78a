"""Resident memory and CPU time of a server process, from /proc/PID (Linux)."""

from __future__ import annotations

import os


def rss_kb(pid: int | None) -> dict[str, int] | None:
    """VmRSS (resident now) and VmHWM (peak resident since the process started), in kB;
    None when the pid is unknown, gone, or this is not Linux."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    out = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out["rss_kb" if key == "VmRSS" else "peak_kb"] = int(value.split()[0])
    return out or None


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time the process has used so far (all threads); None when unknown."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # Fields after the parenthesised command name (which may hold spaces): utime is the 14th
    # field of the line, stime the 15th, in clock ticks.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
