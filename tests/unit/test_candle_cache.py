"""The candle cache: the same bytes as rendering the merged list, stale the moment a candle
closes, bounded, and each worker kept true by its own view of the bus."""

from __future__ import annotations

import tracemalloc
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coinlink.bus.memory import MemoryBus
from coinlink.market import candle_store
from coinlink.market.candle_cache import CandleCache, Rendered, merge
from coinlink.market.service import MarketService
from coinlink.market.types import candle_from_dict
from coinlink.market.view import MarketView

MINUTE = 60_000


def candle(open_time: int, *, closed: bool = True, close: str = "67000.5") -> dict[str, Any]:
    return {
        "symbol": "BTC-USD",
        "interval": "1m",
        "open_time": open_time,
        "close_time": open_time + MINUTE - 1,
        "open": "67000",
        "high": "67100.25",
        "low": "66900",
        "close": close,
        "volume": "1.5",
        "trades": 3,
        "closed": closed,
    }


def reference(
    stored: list[dict[str, Any]],
    newer: list[dict[str, Any]],
    start: int | None,
    end: int | None,
    limit: int,
) -> bytes:
    """What the route answered before the cache: stored, then each newer candle inside the
    range, trimmed to ``limit`` (the newest without ``start``, the oldest with it)."""
    items = list(stored)
    for c in newer:
        if items and items[-1]["open_time"] >= c["open_time"]:
            continue
        if (start is not None and c["open_time"] < start) or (
            end is not None and c["open_time"] > end
        ):
            continue
        items.append(c)
    items = items[-limit:] if start is None else items[:limit]
    return orjson.dumps({"items": items})


@given(
    count=st.integers(0, 6),
    newer=st.sampled_from(["none", "current", "closed", "both", "old"]),
    start=st.one_of(st.none(), st.integers(0, 9)),
    end=st.one_of(st.none(), st.integers(0, 9)),
    limit=st.integers(1, 8),
)
def test_merge_renders_exactly_the_merged_list(
    count: int, newer: str, start: int | None, end: int | None, limit: int
) -> None:
    stored = [candle(i * MINUTE) for i in range(count)]
    views = {
        "none": [],
        "current": [candle(count * MINUTE, closed=False)],
        "closed": [candle(count * MINUTE)],
        "both": [candle(count * MINUTE), candle((count + 1) * MINUTE, closed=False)],
        "old": [candle(0, closed=False)],  # not newer than what is stored
    }[newer]
    s = None if start is None else start * MINUTE
    e = None if end is None else end * MINUTE
    # The database answered the range (at most limit rows) before the merge.
    rows = [
        c
        for c in stored
        if (s is None or c["open_time"] >= s) and (e is None or c["open_time"] <= e)
    ]
    rows = rows[-limit:] if s is None else rows[:limit]
    assert merge(Rendered.of(rows), views, s, e, limit) == reference(rows, views, s, e, limit)


def test_an_entry_serves_only_under_the_marker_it_was_filled_under_and_expires() -> None:
    now = [100.0]
    cache = CandleCache(max_age_s=60, clock=lambda: now[0])
    key = ("BTC-USD", "1m", None, None, 500)
    rendered = Rendered.of([candle(0)])
    cache.put(key, MINUTE, rendered)
    assert cache.get(key, MINUTE) is rendered
    assert cache.get(key, 2 * MINUTE) is None  # a candle closed: read the database again
    assert len(cache) == 0 and cache.bytes == 0
    cache.put(key, None, rendered)
    now[0] += 59.9
    assert cache.get(key, None) is rendered
    now[0] += 0.1
    assert cache.get(key, None) is None


def test_the_cache_holds_at_most_its_bytes_least_recently_used_first_out() -> None:
    one = Rendered.of([candle(i * MINUTE) for i in range(10)])
    cache = CandleCache(max_bytes=3 * one.size())
    keys = [("BTC-USD", "1m", None, None, n) for n in range(1, 6)]
    for key in keys[:3]:
        cache.put(key, 0, one)
    assert cache.get(keys[0], 0) is one  # now the most recently used
    cache.put(keys[3], 0, one)
    assert cache.bytes <= cache.max_bytes and len(cache) == 3
    assert cache.get(keys[1], 0) is None  # the least recently used went
    assert cache.get(keys[0], 0) is one
    for key in keys:
        cache.put(key, 0, one)
        assert cache.bytes <= cache.max_bytes
    huge = CandleCache(max_bytes=one.size() - 1)
    huge.put(keys[0], 0, one)  # larger than the whole cache: not kept
    assert len(huge) == 0 and huge.bytes == 0


def test_an_entry_accounts_for_about_the_memory_it_holds() -> None:
    """The byte bound is a memory bound: ``size()`` is close to what an entry really costs
    (the body, and the two int tuples, which cost more than the body per candle)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        # The rows are read for the entry and then dropped: what they leave is its cost.
        candles = [candle(1_700_000_000_000 + i * MINUTE) for i in range(500)]
        rendered = Rendered.of(candles)
        del candles
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 0.8 * held <= rendered.size() <= 1.25 * held, (rendered.size(), held)


def worker() -> MarketService:
    view = MarketView(["BTC-USD"], staleness_s=30)
    return MarketService(["BTC-USD"], view, MemoryBus(), admin_ticks_enabled=False)


async def store(*open_minutes: int, close: str = "67000.5") -> None:
    await candle_store.store_candles(
        [candle_from_dict(candle(m * MINUTE, close=close)) for m in open_minutes]
    )


async def closes(service: MarketService) -> list[tuple[int, str]]:
    body = await service.candles_json("btc-usd", "1m", None, None, 500)
    assert body == orjson.dumps({"items": orjson.loads(body)["items"]})
    return [(c["open_time"] // MINUTE, c["close"]) for c in orjson.loads(body)["items"]]


@pytest.mark.usefixtures("db")
async def test_each_worker_sees_a_close_at_once_and_reads_the_database_once_per_close() -> None:
    await store(0, 1, 2)
    a, b = worker(), worker()  # two workers, each with its own view fed by the bus
    channel = "candles:BTC-USD:1m"
    for w in (a, b):
        w.view.apply(channel, 1, orjson.dumps(candle(3 * MINUTE, closed=False)))
    first = [(0, "67000.5"), (1, "67000.5"), (2, "67000.5"), (3, "67000.5")]
    assert await closes(a) == await closes(b) == first
    # A change behind the workers' backs is not seen (the cache answers) until a candle
    # closes: closed candles never change, so only a backfill could do this.
    await store(2, close="1")
    assert await closes(a) == await closes(b) == first
    # Candles 3 and 4 close and 5 opens: each worker's hub hands the messages to its view.
    # The leader writes closed candles about a second later; until then the view's copy of
    # the last one is served, and nothing is kept (candle 3 would be missing).
    for w in (a, b):
        for seq, c in enumerate([candle(3 * MINUTE), candle(4 * MINUTE, close="67004")], 2):
            w.view.apply(channel, seq, orjson.dumps(c))
        w.view.apply(channel, 4, orjson.dumps(candle(5 * MINUTE, closed=False)))
    early = [(0, "67000.5"), (1, "67000.5"), (2, "1"), (4, "67004"), (5, "67000.5")]
    assert await closes(a) == await closes(b) == early
    assert [len(w.candle_cache) for w in (a, b)] == [0, 0]
    await store(3, 4, close="67004")
    fresh = [(0, "67000.5"), (1, "67000.5"), (2, "1"), (3, "67004"), (4, "67004"), (5, "67000.5")]
    assert await closes(a) == await closes(b) == fresh
    assert [len(w.candle_cache) for w in (a, b)] == [1, 1]
    await store(3, close="2")  # kept now: served from the cache
    assert await closes(a) == await closes(b) == fresh
