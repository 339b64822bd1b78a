"""A server-wide budget on the bytes of large requests held at once.

The receive limit bounds one request (limits.grpc_receive_limit); this bounds how many large
ones the server holds together, so hostile concurrency (many clients sending 8 MiB requests at
once) cannot take its memory past a documented ceiling. A request's bytes are counted from the
moment gRPC hands them to the deserializer until its handler returns; one that does not fit is
answered RESOURCE_EXHAUSTED without being decoded. Small requests (the overwhelming majority:
lifecycle calls, most completions) are never counted, so a budget held by large requests never
blocks the calls that keep workflows moving.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from backend.service.trim import Trimmer

log = logging.getLogger("backend.service")

# Requests up to this size are not counted (a worker turn with a few small results, a start
# with a small input): the budget is for payload-sized requests.
SMALL_REQUEST_BYTES = 64 * 1024
_LOG_EVERY_SECONDS = 10.0


class RequestBudget:
    def __init__(self, limit_bytes: int, trimmer: Trimmer | None = None) -> None:
        self.limit = limit_bytes
        self.held = 0
        self.trimmer = trimmer if trimmer is not None else Trimmer()
        self._refused = 0
        self._logged_at = 0.0

    def take(self, size: int) -> Reservation | None:
        """A reservation of `size` bytes, or None when it does not fit (logged, rate-limited)."""
        if self.held + size > self.limit:
            self._note_refusal(size)
            return None
        self.held += size
        return Reservation(self, size)

    def give_back(self, size: int) -> None:
        self.held -= size
        self.trimmer.released(size, idle=self.held == 0)

    def _note_refusal(self, size: int) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_SECONDS:
            log.warning(
                "refused %d large request(s): %d bytes of requests in flight (limit %d); latest %d bytes",
                self._refused,
                self.held,
                self.limit,
                size,
            )
            self._refused, self._logged_at = 0, now


class Reservation:
    """Bytes counted against the budget until released. Released at most once, also when the
    call ends before its handler runs (the reservation is then dropped unreleased)."""

    __slots__ = ("_budget", "size")

    def __init__(self, budget: RequestBudget, size: int) -> None:
        self._budget: RequestBudget | None = budget
        self.size = size

    def release(self) -> None:
        budget, self._budget = self._budget, None
        if budget is not None:
            budget.give_back(self.size)

    def __del__(self) -> None:
        self.release()


@dataclass(frozen=True)
class Held:
    """A decoded request and the budget it holds (the interceptor unwraps it)."""

    message: Any
    reservation: Reservation


@dataclass(frozen=True)
class OverBudget:
    """A request that did not fit the budget: not decoded; answered RESOURCE_EXHAUSTED."""

    size: int

    def refusal(self, budget: RequestBudget) -> str:
        return (
            f"the server is holding its limit of large requests ({budget.limit >> 20} MiB in flight; "
            f"this one is {self.size >> 10} KiB): retry with backoff"
        )
