"""Requests whose bytes do not decode: INVALID_ARGUMENT and one log line, not a traceback.

grpc.aio decodes a request before any handler runs. A DecodeError there is answered UNKNOWN
and logged by grpc's own logger with a full traceback (about 1.2 KB per bad request, so a
stream of garbage floods the log). The interceptor (security/interceptor.py) swaps every
method's deserializer for `tolerant(...)`, which hands the handler an `Undecodable` instead of
raising; the handler answers INVALID_ARGUMENT once the caller's credentials are checked (a
caller without them learns nothing about decoding). `LogFilter`, installed by server.py,
condenses whatever grpc still logs about a request that failed to decode (a handler the
interceptor does not wrap) into the same rate-limited line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from backend.limits import clip

log = logging.getLogger("backend.service")

# The logger grpc.aio reports handler and deserializer exceptions on
# ("Unexpected [DecodeError] raised by servicer method [...]", with the traceback).
GRPC_LOGGER = "grpc._cython.cygrpc"
_LOG_EVERY_SECONDS = 10.0


@dataclass(frozen=True)
class Undecodable:
    """What a tolerant deserializer returns for bytes that are not the request type."""

    size: int
    error: str


def tolerant(deserializer: Callable[[bytes], object]) -> Callable[[bytes], object]:
    def decode(data: bytes) -> object:
        try:
            return deserializer(data)
        except Exception as err:  # DecodeError, or whatever a deserializer raises on garbage
            return Undecodable(size=len(data), error=clip(str(err), 200))

    return decode


class _Throttled:
    """One log line per interval, however many bad requests arrive, with their count."""

    def __init__(self) -> None:
        self._count = 0
        self._logged_at = -_LOG_EVERY_SECONDS

    def note(self, method: str, error: str) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_SECONDS:
            log.warning("refused %d undecodable request(s); latest on %s: %s", self._count, method, error)
            self._count, self._logged_at = 0, now


_THROTTLED = _Throttled()


def refusal(request: Undecodable, method: str) -> str:
    """Note the refusal (rate-limited) and say what the caller gets."""
    _THROTTLED.note(method, request.error)
    return f"the request ({request.size} bytes) does not decode as this RPC's message: {request.error}"


class LogFilter(logging.Filter):
    """Turns grpc's traceback for a request that failed to decode into the throttled line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, DecodeError) or "deserializ" in record.getMessage().lower():
            _THROTTLED.note("(grpc)", clip(str(error or record.getMessage()), 200))
            return False
        return True


def install_log_filter() -> None:
    logger = logging.getLogger(GRPC_LOGGER)
    if not any(isinstance(f, LogFilter) for f in logger.filters):
        logger.addFilter(LogFilter())
