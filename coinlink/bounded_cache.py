"""A worker's cache of rendered answers: bounded by bytes, each entry valid under a tag.

An entry is served only when the caller's tag (a user's version, a channel's newest candle)
equals the one it was filled under, and for at most ``max_age_s``; the least recently used
entries go first once the entries' sizes pass ``max_bytes``. What a tag means, and when it
moves, is the business of each cache that uses this one.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, NamedTuple, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Entry(NamedTuple, Generic[V]):
    value: V
    tag: object
    expires: float
    size: int


class BoundedCache(Generic[K, V]):
    def __init__(
        self,
        size: Callable[[V], int],
        max_bytes: int,
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.clock = clock
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, tag: object) -> V | None:
        """The value of ``key`` if it was filled under ``tag`` and is not too old."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.tag != tag or self.clock() >= entry.expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry.value

    def put(self, key: K, tag: object, value: V) -> None:
        """Keep ``value`` under ``tag`` (a value larger than the whole cache is not kept)."""
        size = self.size(value)
        if size > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = _Entry(value, tag, self.clock() + self.max_age_s, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: K) -> None:
        self.bytes -= self._entries.pop(key).size
