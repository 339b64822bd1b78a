"""Log set-up: `--log-format text|json`, and the context every line about one work item carries.

The engine runs each workflow turn and each activity as a task of its own, and gRPC each RPC:
`bind(...)` at the top of one sets context variables for that task alone, and the formatter adds
them (instance_id, app_id, work_item, token, the first characters of the lease or completion
token only) to every line logged inside it. `extra={...}` on a call overrides them.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_FIELDS = ("instance_id", "app_id", "work_item", "token")
_CONTEXT: ContextVar[dict[str, str] | None] = ContextVar("log_context", default=None)
TOKEN_PREFIX = 8  # enough to tell work items apart in a log, never enough to complete one


def token_prefix(token: str) -> str:
    return token[:TOKEN_PREFIX]


def bind(
    *,
    instance_id: str | None = None,
    app_id: str | None = None,
    work_item: str | None = None,
    token: str | None = None,
) -> None:
    """Attach these to every line logged from the current task on (a task's own context)."""
    values = dict(_CONTEXT.get() or {})
    for key, value in (("instance_id", instance_id), ("app_id", app_id), ("work_item", work_item)):
        if value:
            values[key] = value
    if token:
        values["token"] = token_prefix(token)
    _CONTEXT.set(values)


def context() -> dict[str, str]:
    values = dict(_CONTEXT.get() or {})
    if "app_id" not in values:
        try:  # inside an RPC: the caller's app as the security interceptor resolved it
            from backend.security.interceptor import caller

            values["app_id"] = caller()
        except LookupError:
            pass
    return values


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the work item's context, and the
    exception, if any, as text."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(context())
        for key in _FIELDS:
            value = record.__dict__.get(key)
            if value:
                out[key] = token_prefix(str(value)) if key == "token" else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    text = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")  # unchanged: tools grep it
    handler.setFormatter(JsonFormatter() if fmt == "json" else text)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
