"""Consecutive failures per key, in memory: what decides backoff and when to stop trying.

A success clears a key. Bounded (oldest keys forgotten first), so a storm of failing
instances cannot grow it without limit; forgetting only restarts that key's count.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Strikes(Generic[K]):
    def __init__(self, max_keys: int = 10_000) -> None:
        self._max = max_keys
        self._counts: OrderedDict[K, int] = OrderedDict()

    def hit(self, key: K) -> int:
        """One more failure; the count so far."""
        count = self._counts.pop(key, 0) + 1
        self._counts[key] = count
        while len(self._counts) > self._max:
            self._counts.popitem(last=False)
        return count

    def clear(self, key: K) -> None:
        self._counts.pop(key, None)

    def __getitem__(self, key: K) -> int:
        return self._counts.get(key, 0)
