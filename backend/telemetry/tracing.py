"""Tracing on or off, and the engine's hook: the spans a committed workflow turn completed
(telemetry/trace_spans.py) go to OpenTelemetry (telemetry/trace_export.py).

Optional: `pip install 'durabletask-sidecar[otel]'`. On with `--otel` or with the standard
environment (OTEL_TRACES_EXPORTER other than `none`, OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); exporter, endpoint, headers, sampler and batching come
from OTEL_* as every OpenTelemetry SDK reads them. Off, nothing imports OpenTelemetry. The
trace context workflows carry (domain/trace.py) needs none of this.

Process-wide on purpose, like telemetry/metrics.py: the engine's hook is one line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from backend._proto import history_events_pb2 as hpb
from backend.domain.model import InstanceKey
from backend.errors import ConfigError
from backend.telemetry import trace_spans

if TYPE_CHECKING:
    from backend.telemetry.trace_export import Tracing

log = logging.getLogger("backend.tracing")

INSTALL_HINT = "pip install 'durabletask-sidecar[otel]'"


class TracingUnavailable(ConfigError):
    """Tracing was asked for but cannot start (the `otel` extra is missing, or OTEL_* is wrong)."""


def wanted(flag: bool, env: Mapping[str, str] | None = None) -> bool:
    """Whether tracing is asked for: the flag, or the OTEL_* environment."""
    env = os.environ if env is None else env
    if flag:
        return True
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def start(flag: bool, env: Mapping[str, str] | None = None) -> Tracing | None:
    """Install the process's tracing if asked for. With `--otel` a missing extra is an error;
    asked for by the environment alone it is a warning (OTEL_* may be meant for other programs)."""
    if not wanted(flag, env):
        return None
    try:
        from backend.telemetry import trace_export
    except ImportError as err:
        if flag:
            raise TracingUnavailable(f"--otel needs OpenTelemetry: {INSTALL_HINT}") from err
        log.warning("OTEL_* asks for traces but OpenTelemetry is not installed (%s): no traces", INSTALL_HINT)
        return None
    try:
        tracing = trace_export.from_environment(env)
    except ValueError as err:
        raise TracingUnavailable(str(err)) from err
    install(tracing)
    return tracing


def stop() -> None:
    """Flush and uninstall (the server's shutdown)."""
    tracing = install(None)
    if tracing is not None:
        tracing.shutdown()


_active: Tracing | None = None


def install(tracing: Tracing | None) -> Tracing | None:
    """Make `tracing` the process's (None: off); returns the previous one."""
    global _active
    previous, _active = _active, tracing
    return previous


def workflow_committed(
    key: InstanceKey,
    past: Sequence[hpb.HistoryEvent],
    new: Sequence[hpb.HistoryEvent],
    *,
    now: datetime,
    continued_as_new: bool = False,
) -> None:
    """The engine's hook, after a turn committed. Never raises: a tracing problem must not
    fail a turn that is already committed."""
    tracing = _active
    if tracing is None:
        return
    try:
        tracing.emit(trace_spans.of_turn(key, past, new, now=now, continued_as_new=continued_as_new))
    except Exception:
        log.exception("could not export the spans of a turn of %s", key)
