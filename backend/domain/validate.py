"""Checks on the fields of client and worker input. Pure; raises InvalidArgument / PayloadTooLarge.

Every check names the field (`what`) and the bound (backend/limits.py), and quotes at most a
short prefix of the value. Lengths are checked before characters, so an oversized value is
refused without being scanned.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime

from google.protobuf import timestamp_pb2, wrappers_pb2

from backend import limits
from backend._proto import orchestration_pb2 as opb
from backend.domain import events as ev
from backend.errors import InvalidArgument, PayloadTooLarge

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What daprd 1.18 accepts for client-chosen instance IDs ('.', ':', spaces, any letters; not '/').
_BAD_ID_CHAR = re.compile(r"[/\x00-\x1f\x7f]")
_STATUSES = frozenset(opb.OrchestrationStatus.values())


def _text(value: str, what: str, limit: int, *, required: bool) -> str:
    """A bounded identifier-like string: at most `limit` characters, no control characters."""
    if required and not value:
        raise InvalidArgument(f"{what} is required")
    if len(value) > limit:
        raise InvalidArgument(f"{what} is {len(value)} characters long; this server accepts at most {limit}")
    if _CONTROL.search(value):
        raise InvalidArgument(f"{what} {limits.quote(value)} contains control characters")
    return value


def _bytes(value: str, what: str, limit: int) -> None:
    size = len(value.encode())
    if size > limit:
        raise InvalidArgument(f"{what} is {size} bytes; this server accepts at most {limit}")


# -- identifiers -----------------------------------------------------------------------------------


def new_instance_id(instance_id: str, what: str = "instance ID") -> str:
    """An ID that names a new instance (client-chosen, or a worker's child or detached workflow)."""
    if not instance_id or len(instance_id) > limits.MAX_INSTANCE_ID_CHARS or _BAD_ID_CHAR.search(instance_id):
        raise InvalidArgument(
            f"invalid {what} {limits.quote(instance_id)}: use 1-{limits.MAX_INSTANCE_ID_CHARS} characters, "
            "without '/' or control characters"
        )
    return instance_id


def existing_instance_id(instance_id: str, what: str = "instanceId") -> str:
    """IDs the server made itself (child IDs contain ':') must still be addressable."""
    return _text(instance_id, what, limits.MAX_INSTANCE_ID_CHARS, required=True)


def execution_id(value: str, what: str = "executionId") -> str:
    return _text(value, what, limits.MAX_EXECUTION_ID_CHARS, required=False)


def page_token(value: str) -> str:
    """ListInstanceIDs' continuationToken: the last instance ID of the previous page."""
    return _text(value, "continuationToken", limits.MAX_INSTANCE_ID_CHARS, required=False)


def app_id(value: str, what: str = "app ID") -> str:
    return _text(value, what, limits.MAX_APP_ID_CHARS, required=False)


def router(value: opb.TaskRouter | None, what: str = "router") -> None:
    if value is None:
        return
    app_id(value.sourceAppID, f"{what}.sourceAppID")
    app_id(value.targetAppID, f"{what}.targetAppID")
    app_id(value.targetAppNamespace, f"{what}.targetAppNamespace")


# -- names and versions ------------------------------------------------------------------------------


def name(value: str, what: str) -> str:
    if not value.strip():
        raise InvalidArgument(f"{what} must not be empty")
    return _text(value, what, limits.MAX_NAME_CHARS, required=True)


def optional_name(value: str, what: str) -> str:
    """A name that may be empty (a timer's)."""
    return _text(value, what, limits.MAX_NAME_CHARS, required=False)


def version(value: wrappers_pb2.StringValue | None, what: str = "version") -> None:
    if value is not None:
        _text(value.value, what, limits.MAX_VERSION_CHARS, required=False)


def patches(values: Iterable[str], what: str) -> None:
    listed = list(values)
    if len(listed) > limits.MAX_PATCHES:
        raise InvalidArgument(
            f"{what} has {len(listed)} entries; this server accepts at most {limits.MAX_PATCHES}"
        )
    for i, patch in enumerate(listed):
        _text(patch, f"{what}[{i}]", limits.MAX_VERSION_CHARS, required=False)


# -- tags and trace context --------------------------------------------------------------------------


def tags(values: Mapping[str, str], what: str = "tags") -> None:
    if len(values) > limits.MAX_TAGS:
        raise InvalidArgument(
            f"{what} has {len(values)} entries; this server accepts at most {limits.MAX_TAGS}"
        )
    total = 0
    for key, value in values.items():
        _text(key, f"{what} key {limits.quote(key)}", limits.MAX_TAG_KEY_CHARS, required=False)
        _bytes(value, f"{what}[{limits.quote(key)}]", limits.MAX_TAG_VALUE_BYTES)
        total += len(key.encode()) + len(value.encode())
    if total > limits.MAX_TAGS_TOTAL_BYTES:
        raise InvalidArgument(
            f"{what} hold {total} bytes of keys and values; this server accepts at most {limits.MAX_TAGS_TOTAL_BYTES}"
        )


def trace_context(value: opb.TraceContext | None, what: str = "parentTraceContext") -> None:
    if value is None:
        return
    _text(value.traceParent, f"{what}.traceParent", limits.MAX_TRACE_PARENT_CHARS, required=False)
    _text(value.spanID, f"{what}.spanID", limits.MAX_SPAN_ID_CHARS, required=False)
    if value.HasField("traceState"):
        _text(value.traceState.value, f"{what}.traceState", limits.MAX_TRACE_STATE_CHARS, required=False)


# -- timestamps, statuses ----------------------------------------------------------------------------


def timestamp(stamp: timestamp_pb2.Timestamp, what: str) -> datetime:
    """A Timestamp within protobuf's range (years 1-9999, nanos 0-999,999,999), as a datetime."""
    if (
        not limits.MIN_TIMESTAMP_SECONDS <= stamp.seconds <= limits.MAX_TIMESTAMP_SECONDS
        or not 0 <= stamp.nanos <= limits.MAX_NANOS
    ):
        raise InvalidArgument(
            f"{what} is out of range (seconds={stamp.seconds}, nanos={stamp.nanos}): a timestamp lies "
            "between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z, with nanos 0-999999999"
        )
    return ev.from_ts(stamp)


def statuses(values: Iterable[int], what: str = "runtimeStatus") -> frozenset[int]:
    out = frozenset(int(v) for v in values)
    unknown = sorted(out - _STATUSES)
    if unknown:
        raise InvalidArgument(f"{what}: {unknown[:10]} are not workflow statuses")
    return out


# -- payloads and reasons ----------------------------------------------------------------------------


def payload(value: wrappers_pb2.StringValue | None, what: str, limit: int) -> None:
    if value is None:
        return
    size = len(value.value.encode())
    if size > limit:
        raise PayloadTooLarge(
            f"{what} is {size} bytes; this server accepts payloads up to {limit} bytes "
            "(raise it with --max-payload-bytes)"
        )


def reason(value: wrappers_pb2.StringValue | None, what: str, max_payload: int) -> None:
    """A suspend or resume reason: text for people, never larger than a payload either."""
    if value is None:
        return
    limit = min(limits.MAX_REASON_BYTES, max_payload)
    size = len(value.value.encode())
    if size > limit:
        raise PayloadTooLarge(f"{what} is {size} bytes; this server accepts at most {limit}")
