"""Every bound on what clients and workers send, in one place.

Checked where input enters (backend/domain/validate.py for fields, backend/domain/action_checks.py
for worker actions, backend/domain/failures.py for failure details), the same on every store, so a
store never sees a value it cannot hold. Payloads (inputs, outputs, results, event data, custom
status) are bounded by `Config.max_payload_bytes` (--max-payload-bytes) instead.

Lengths of identifiers and names are in characters (what a user counts); sizes of free text
(tag values, reasons, failure messages) are in UTF-8 bytes (what a store and the wire hold).
The README's "Limits" table lists each bound with what a user sees when it is hit.
"""

from __future__ import annotations

# -- identifiers and names (characters; control characters U+0000-U+001F and U+007F never) ------

# Instance IDs, client-chosen and worker-created (child and detached workflows) alike; '/' is
# refused in new IDs as daprd refuses it. Temporal bounds its identifiers at 1,000 characters
# (limit.maxIDLength); daprd 1.18 takes at least 300.
MAX_INSTANCE_ID_CHARS = 1024
# App IDs in router fields (targetAppID, sourceAppID, targetAppNamespace). Dapr app IDs are
# Kubernetes names in practice (at most 253); 256 leaves room for self-hosted ones.
MAX_APP_ID_CHARS = 256
# Workflow, activity, event and timer names: the same order as Temporal's workflow and activity
# type names and signal names (1,000), rounded to the instance-ID bound.
MAX_NAME_CHARS = 1024
# Versions (StartInstance.version, an action's version, continue-as-new's newVersion and the
# turn's WorkflowVersion name and patches): Dapr versioning names a version by a workflow
# name, so the bound is a name's.
MAX_VERSION_CHARS = MAX_NAME_CHARS
# Patches one turn reports in WorkflowResponse.version (each a name).
MAX_PATCHES = 1000
# executionId (StartInstance, detached workflows, sendEvent targets) and taskExecutionId: the
# SDKs send UUIDs (32-36 characters); 256 leaves room for other schemes.
MAX_EXECUTION_ID_CHARS = 256

# -- tags (StartInstance.tags, createDetachedWorkflow.tags) -------------------------------------

# Temporal's search attributes are the anchor: 100 keys, 2 KB a value, 40 KB in all.
MAX_TAGS = 100
MAX_TAG_KEY_CHARS = 256
MAX_TAG_VALUE_BYTES = 2 * 1024
MAX_TAGS_TOTAL_BYTES = 40 * 1024  # keys and values, UTF-8

# -- trace context (parentTraceContext) --------------------------------------------------------

# A W3C traceparent of version 00 is 55 characters; later versions may append fields.
MAX_TRACE_PARENT_CHARS = 512
# W3C and OpenTelemetry span IDs are 16 hex characters.
MAX_SPAN_ID_CHARS = 256
# The longest tracestate W3C Trace Context allows: 32 members "key=value", a key of at most
# 256 and a value of at most 256 characters, comma-separated (16,447 characters).
MAX_TRACE_STATE_CHARS = 32 * (256 + 1 + 256) + 31

# -- failure details (activity failures, a workflow's own failure) -----------------------------

# A failure over these bounds is truncated, never refused: the task still fails with the
# user's errorType, its message and stack trace cut with a marker saying how much was cut.
# Temporal does the same (failure.Truncate: bytes go to the outermost failure first, at most
# 20 nested causes) with the 512 KB blob warning size as the target.
MAX_ERROR_TYPE_CHARS = MAX_NAME_CHARS  # a class name; cut without a marker
MAX_ERROR_MESSAGE_BYTES = 64 * 1024
MAX_STACK_TRACE_BYTES = 256 * 1024
MAX_FAILURE_BYTES = 512 * 1024  # the whole chain of innerFailure, outermost first
MAX_FAILURE_DEPTH = 20  # a failure and at most 19 nested innerFailure levels

# -- reasons (SuspendInstance / ResumeInstance reason) ----------------------------------------

# A reason is text for people, recorded in the history; never more than a payload either.
# (A termination's output is the workflow's output: a payload, --max-payload-bytes.)
MAX_REASON_BYTES = 64 * 1024

# -- timestamps ---------------------------------------------------------------------------------

# google.protobuf.Timestamp's own range, 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799
MAX_NANOS = 999_999_999

# -- listing ------------------------------------------------------------------------------------

MAX_PAGE_SIZE = 10_000  # ListInstanceIDs.pageSize is clamped to this

# -- the gRPC envelope --------------------------------------------------------------------------

# Room for everything of a request that is not a payload: IDs, names, tags, trace context and a
# failure, each bounded above (a failure before truncation is what needs the most).
ENVELOPE_BYTES = 1024 * 1024


def grpc_receive_limit(max_payload_bytes: int) -> int:
    """The largest request gRPC reads, so the ceiling on what one request can hold in memory.

    A client request carries one payload; a worker's turn may carry one per action, and
    Temporal's own ratio (4 MB gRPC messages for 2 MB payloads) is the anchor for twice the
    payload limit. Past this gRPC answers RESOURCE_EXHAUSTED before any of our code runs;
    below it an oversized payload gets our INVALID_ARGUMENT naming --max-payload-bytes.
    Default: 2 x 4 MiB + 1 MiB = 9 MiB (it was max(64 MiB, 4 x payload)).
    """
    return 2 * max_payload_bytes + ENVELOPE_BYTES


# -- quoting input in errors and logs ------------------------------------------------------------

# Input is quoted in error messages by at most this many characters: a status message travels
# as a header, percent-encoded (up to 12 bytes per character), and gRPC clients refuse headers
# over 8 KiB, which turned a long instance ID in a NOT_FOUND into RESOURCE_EXHAUSTED.
QUOTE_CHARS = 64
# Every status message is cut to this many UTF-8 bytes at the boundary (service/status.py),
# whatever it quotes: at most 3 KiB on the wire.
MAX_STATUS_MESSAGE_BYTES = 1024


def quote(value: str, limit: int = QUOTE_CHARS) -> str:
    """`value` for an error message or a log line: repr-quoted (control characters escaped),
    cut to `limit` characters with its full length said when longer."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def clip(text: str, limit: int = MAX_STATUS_MESSAGE_BYTES) -> str:
    """`text` cut to at most `limit` UTF-8 bytes (on a character boundary), marked when cut."""
    data = text.encode()
    if len(data) <= limit:
        return text
    marker = " [...]"
    return data[: limit - len(marker)].decode(errors="ignore") + marker
