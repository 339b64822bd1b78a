"""Store operation latency and errors, measured around any Store without touching its code.

A proxy rather than a Store subclass: every coroutine method the store has (the interface's and
the operator queries others add) is timed, everything else passes through unchanged.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from backend.errors import LeaseLost
from backend.store.base import Store
from backend.telemetry import metrics

# Commits that find their lease gone: another server took the work over (or it was purged).
_LEASED = {"commit_workflow": "workflow", "complete_activity": "activity"}


class _Metered:
    def __init__(self, inner: Store, kind: str) -> None:
        self._inner = inner
        self._kind = kind
        self._wrapped: dict[str, Callable[..., Awaitable[Any]]] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attr):
            return attr
        wrapped = self._wrapped.get(name)
        if wrapped is None:
            wrapped = self._wrapped[name] = self._timed(name)
        return wrapped

    def _timed(self, name: str) -> Callable[..., Awaitable[Any]]:
        seconds = metrics.STORE_SECONDS.labels(self._kind, name)
        kind = self._kind

        @functools.wraps(getattr(self._inner, name))
        async def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await getattr(self._inner, name)(*args, **kwargs)
            except Exception as err:
                metrics.STORE_ERRORS.labels(kind, name, type(err).__name__).inc()
                if isinstance(err, LeaseLost) and name in _LEASED:
                    metrics.lease_lost(_LEASED[name])
                raise
            finally:
                seconds.observe(time.perf_counter() - started)

        return call

    def changes(self) -> Any:  # a sync method returning an async iterator: not timed
        return self._inner.changes()


def metered(store: Store, url: str) -> Store:
    kind = url.split(":", 1)[0] or "store"
    if kind in ("sqlite", "memory"):
        kind = "sqlite"
    return cast(Store, _Metered(store, kind))
