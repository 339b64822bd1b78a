"""Give freed memory back to the OS after large requests (glibc's malloc_trim).

A large request's bytes pass through gRPC core, protobuf and our handler; freed, they stay in
glibc's heaps, which return little to the OS on their own: 100 requests of 8 MB each, all
answered and freed, left the server at 780 MB RSS (80 MB after one malloc_trim). The budget
(admission.py) tells us when many bytes of large requests have been released; then we trim,
at most once a second, on the event loop (a trim of a large heap takes a few milliseconds).
Elsewhere than glibc (musl, macOS) this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("backend.service")

TRIM_AFTER_BYTES = 64 * 1024 * 1024  # released since the last trim
_MIN_INTERVAL_SECONDS = 1.0


def _malloc_trim() -> Callable[[], None] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


class Trimmer:
    def __init__(self, trim: Callable[[], None] | None = None) -> None:
        self._trim = trim if trim is not None else _malloc_trim()
        self._released = 0
        self._last = 0.0
        self._scheduled = False
        self.trims = 0

    def released(self, size: int, *, idle: bool) -> None:
        """`size` bytes of a large request were freed; trim once enough have been, or once no
        large request is held any more (the end of a burst)."""
        if self._trim is None:
            return
        self._released += size
        if self._scheduled or not (idle or self._released >= TRIM_AFTER_BYTES):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # released from a thread without a loop (garbage collection): the next one trims
        self._scheduled = True
        wait = max(0.0, self._last + _MIN_INTERVAL_SECONDS - time.monotonic())
        loop.call_later(wait, self._run)

    def _run(self) -> None:
        self._scheduled = False
        self._released = 0
        self._last = time.monotonic()
        assert self._trim is not None
        gc.collect()  # a refused call's exception and traceback hold its request in a cycle
        self._trim()
        self.trims += 1
