"""Failure details from workers, bounded: truncated, never refused.

An activity or a workflow that fails with a huge message (a 17 MB errorMessage exceeded
MongoDB's 16 MB document limit and re-ran the activity forever) still fails, with the user's
errorType and isNonRetriable kept, so SDK users see their own error: only errorMessage and
stackTrace are cut, with a marker saying how much, and nesting past MAX_FAILURE_DEPTH is
dropped. Bytes go to the outermost failure first (as Temporal's failure.Truncate does): it is
the one the SDKs raise. Pure.
"""

from __future__ import annotations

from backend import limits
from backend._proto import orchestration_pb2 as opb


def _cut(text: str, limit: int) -> str:
    """`text` within `limit` UTF-8 bytes, ending with a marker when cut."""
    data = text.encode()
    if len(data) <= limit:
        return text
    marker = f"... [truncated by the server: {len(data)} bytes, at most {limit} kept]"
    keep = max(0, limit - len(marker.encode()))
    return data[:keep].decode(errors="ignore") + marker


def _depth(details: opb.TaskFailureDetails) -> int:
    depth, level = 1, details
    while level.HasField("innerFailure"):
        depth, level = depth + 1, level.innerFailure
    return depth


def _fits(details: opb.TaskFailureDetails) -> bool:
    """Within every bound already (the common case: nothing is copied)."""
    level: opb.TaskFailureDetails | None = details
    depth = 0
    while level is not None:
        depth += 1
        if (
            depth > limits.MAX_FAILURE_DEPTH
            or len(level.errorType) > limits.MAX_ERROR_TYPE_CHARS
            or len(level.errorMessage.encode()) > limits.MAX_ERROR_MESSAGE_BYTES
            or len(level.stackTrace.value.encode()) > limits.MAX_STACK_TRACE_BYTES
        ):
            return False
        level = level.innerFailure if level.HasField("innerFailure") else None
    return details.ByteSize() <= limits.MAX_FAILURE_BYTES


def _truncate(details: opb.TaskFailureDetails) -> None:
    budget = limits.MAX_FAILURE_BYTES
    level, depth = details, 1
    while True:
        level.errorType = level.errorType[: limits.MAX_ERROR_TYPE_CHARS]
        budget -= len(level.errorType.encode())
        level.errorMessage = _cut(level.errorMessage, max(0, min(limits.MAX_ERROR_MESSAGE_BYTES, budget)))
        budget -= len(level.errorMessage.encode())
        if level.HasField("stackTrace"):
            level.stackTrace.value = _cut(
                level.stackTrace.value, max(0, min(limits.MAX_STACK_TRACE_BYTES, budget))
            )
            budget -= len(level.stackTrace.value.encode())
        if not level.HasField("innerFailure"):
            return
        if depth >= limits.MAX_FAILURE_DEPTH or budget <= 0:
            dropped = _depth(level.innerFailure)
            level.ClearField("innerFailure")
            # A few bytes over the message bound, so the note survives a cut message.
            level.errorMessage += f" [{dropped} nested innerFailure level(s) dropped by the server]"
            return
        level, depth = level.innerFailure, depth + 1


def bounded(details: opb.TaskFailureDetails) -> opb.TaskFailureDetails:
    """`details` itself when within the bounds, else a truncated copy."""
    if _fits(details):
        return details
    out = opb.TaskFailureDetails()
    out.CopyFrom(details)
    _truncate(out)
    return out


def bound_in_place(details: opb.TaskFailureDetails) -> bool:
    """Truncate `details` itself (a request the caller owns); True if anything was cut."""
    if _fits(details):
        return False
    _truncate(details)
    return True
