"""Each worker's cache of closed candles as rendered JSON, so a chart read is a lookup.

Reading 500 candles costs a database round trip, 500 rows of Decimals and their rendering:
~8 ms of CPU, for bytes that do not change. A closed candle never changes, so a worker keeps
what a query of the database answered, item by item already rendered, and joins the bytes
per request (plus what the worker's :class:`~coinlink.market.view.MarketView` knows newer:
the candle that closed last and the one still open, from the bus).

When an entry stops being true, and how that is noticed in every worker:

* A candle closes: the ingest leader publishes it on ``candles:<SYMBOL>:<INTERVAL>``, which
  every worker's hub follows (with gap recovery), so the view's newest candle of that
  channel changes. An entry is valid only for the newest candle open time it was filled
  under (:meth:`CandleCache.get`'s ``marker``): the next request reads the database again.
  The leader writes closed candles about a second after publishing them: a read that finds
  the view's last closed candle newer than the database's (:func:`complete`) is answered
  (with the view's copy appended) but not kept, so no entry misses a closed candle.
* A backfill (a new leader filling history a provider has) changes no newest candle:
  entries also expire after :data:`MAX_AGE_S`, which bounds that staleness.

Bounded by the bytes it holds (:data:`MAX_BYTES` per worker, least recently used first out):
a key is any (symbol, interval, start, end, limit) a client asks for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final, NamedTuple

import orjson

from coinlink.bounded_cache import BoundedCache

MAX_BYTES: Final = 32 * 1024 * 1024
"""Memory kept per worker (~230 full 500-candle answers)."""
MAX_AGE_S: Final = 60.0
"""How long an entry serves at most: the bound on staleness when no candle closes."""
_ENTRY_OVERHEAD: Final = 512  # the key, offsets and bookkeeping, roughly, per entry
# Per candle beyond its JSON: a slot in each tuple (8 + 8) and the two ints they own (an
# offset and an open time, 32 bytes each as allocated): more than half the JSON's ~200.
_PER_CANDLE: Final = 80

Key = tuple[str, str, int | None, int | None, int]


class Rendered(NamedTuple):
    """Stored candles of one query, oldest first, rendered: ``body`` is their JSON objects
    joined by commas; item ``i`` starts at ``starts[i]``; ``open_times`` for the merge."""

    body: bytes
    starts: tuple[int, ...]
    open_times: tuple[int, ...]

    @classmethod
    def of(cls, items: list[dict[str, Any]]) -> Rendered:
        parts = [orjson.dumps(item) for item in items]
        starts, at = [], 0
        for part in parts:
            starts.append(at)
            at += len(part) + 1
        return cls(b",".join(parts), tuple(starts), tuple(i["open_time"] for i in items))

    def size(self) -> int:
        return len(self.body) + _PER_CANDLE * len(self.starts) + _ENTRY_OVERHEAD


class CandleCache(BoundedCache[Key, Rendered]):
    """Rendered candles by query, each valid under the open time of its channel's newest
    candle (the tag) and for :data:`MAX_AGE_S`."""

    def __init__(
        self,
        max_bytes: int = MAX_BYTES,
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(Rendered.size, max_bytes, max_age_s, clock)


def _in_range(open_time: int, start: int | None, end: int | None) -> bool:
    return (start is None or open_time >= start) and (end is None or open_time <= end)


def complete(
    stored: Rendered, last_closed: dict[str, Any] | None, start: int | None, end: int | None
) -> bool:
    """False while the view's last closed candle (inside the range) is newer than what the
    database answered: the leader has not written it yet, so the answer must not be kept."""
    if last_closed is None or not _in_range(last_closed["open_time"], start, end):
        return True
    return bool(stored.open_times) and stored.open_times[-1] >= last_closed["open_time"]


def merge(
    stored: Rendered,
    newer: list[dict[str, Any]],
    start: int | None,
    end: int | None,
    limit: int,
) -> bytes:
    """``{"items": [...]}`` of the stored candles then those of ``newer`` (the view's, oldest
    first) opened after the last stored one and inside ``[start, end]``; at most ``limit``:
    the oldest from ``start`` when it is given, else the newest. The same bytes as
    ``orjson.dumps({"items": items})`` of the merged list."""
    last = stored.open_times[-1] if stored.open_times else None
    extra = [
        orjson.dumps(c)
        for c in newer
        if (last is None or c["open_time"] > last) and _in_range(c["open_time"], start, end)
    ]
    count = len(stored.starts)
    if start is None:
        skip = max(0, count + len(extra) - limit)  # the oldest go first
        extra = extra[max(0, skip - count) :]
        body = stored.body[stored.starts[skip] :] if skip < count else b""
    else:
        keep = min(count, limit)  # the newest go first
        extra = extra[: limit - keep]
        body = stored.body if keep == count else stored.body[: stored.starts[keep] - 1]
    parts = [body, *extra] if body else extra
    return b'{"items":[' + b",".join(parts) + b"]}"
