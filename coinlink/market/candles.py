"""OHLCV candles built tick by tick, for every interval at once.

Design choices:

* Boundaries are UTC-epoch aligned and exact to the millisecond:
  ``open_time = ts - ts % length`` and ``close_time = open_time + length - 1`` (inclusive), so
  a tick at ``open_time + length`` opens the next candle. Epoch alignment puts 1d candles at
  00:00 UTC and 4h candles at 00:00, 04:00, ... UTC. Every length divides the next one, so a
  coarser candle is exactly the union of the finer candles inside it.
* Gaps are not filled: when a tick lands several periods after the current candle, that
  candle closes and a new one opens at the tick's period; the periods in between have no
  candle at all. Inventing flat zero-volume candles would fabricate data (they would look
  like observed prices), cost O(gap) work after an outage, and the API can render a missing
  period just as well.
* ``volume`` is the ticks' base-currency volume. ``trades`` counts ticks whose volume is
  greater than zero: a pure quote update (volume 0) moves open/high/low/close, because it is
  a price observation, but it is not a trade.
* A closed candle is handed out exactly once, with ``closed=True``, either by the ``add()``
  whose tick crossed its boundary or by ``flush(now_ms)`` once its ``close_time < now_ms``
  (quiet symbols). Within one call, closed candles come in interval order (shortest first).
* Ticks must arrive in timestamp order (the validator guarantees it). A tick that is older
  than the previous one, or falls inside a period already closed (typically after a
  ``flush`` that ran ahead of a lagging exchange clock), is ignored by every interval:
  re-opening a candle that was already published as closed would publish it twice, and
  updating only some intervals would make a 5m candle disagree with its 1m candles.
  Callers that flush by wall clock should pass ``now_ms`` minus a grace period.
* The hot path keeps one mutable ``Candle`` per interval and updates it in place; the only
  allocation is a new ``Candle`` when a period starts. ``current()`` returns a copy, and a
  candle handed out as closed is never touched again, so what a caller holds never changes
  under it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from decimal import Decimal
from typing import Final

from coinlink.market.types import INTERVALS, Candle, Tick

_ZERO: Final = Decimal(0)


def _length(interval: str) -> int:
    try:
        return INTERVALS[interval]
    except KeyError:
        raise ValueError(f"unknown interval {interval!r}") from None


def _copy(c: Candle) -> Candle:
    return replace(c)


class CandleBuilder:
    """The candles of one symbol, for several intervals; see the module docstring."""

    __slots__ = (
        "_current",
        "_intervals",
        "_last_ts",
        "_lengths",
        "_watermark",
        "symbol",
    )

    def __init__(self, symbol: str, intervals: Iterable[str] = tuple(INTERVALS)) -> None:
        names = tuple(intervals)
        if not names:
            raise ValueError("at least one interval is needed")
        if len(set(names)) != len(names):
            raise ValueError("duplicate interval")
        # Shortest first: "interval order" for the candles add() and flush() return.
        names = tuple(sorted(names, key=_length))
        self.symbol = symbol
        self._intervals: tuple[str, ...] = names
        self._lengths: tuple[int, ...] = tuple(_length(n) for n in names)
        self._current: list[Candle | None] = [None] * len(names)
        self._last_ts: int | None = None
        # The latest close_time of any candle handed out as closed: ticks at or before it
        # belong to a period that is already published.
        self._watermark = -1

    @property
    def intervals(self) -> tuple[str, ...]:
        return self._intervals

    def restore(self, candle: Candle) -> None:
        """Take over where a previous leader stopped (its last published candle).

        An open candle is resumed: ticks inside it extend it. A closed one marks its
        period as published: later ticks in it are late, as they were for that leader.
        """
        if candle.closed:
            self._watermark = max(self._watermark, candle.close_time)
        else:
            i = self._intervals.index(candle.interval)
            resumed = _copy(candle)
            resumed.closed = False
            self._current[i] = resumed
            self._watermark = max(self._watermark, candle.open_time - 1)
        if self._last_ts is None or candle.open_time > self._last_ts:
            self._last_ts = candle.open_time

    def add(self, tick: Tick) -> list[Candle]:
        """Apply ``tick``; return the candles it closed (``closed=True``, interval order)."""
        if tick.symbol != self.symbol:
            raise ValueError(f"tick for {tick.symbol!r} given to the {self.symbol!r} builder")
        ts = tick.ts
        last_ts = self._last_ts
        if ts <= self._watermark or (last_ts is not None and ts < last_ts):
            return []
        self._last_ts = ts

        price = tick.price
        volume = tick.volume
        traded = 1 if volume > _ZERO else 0
        current = self._current
        closed: list[Candle] = []
        for i, length in enumerate(self._lengths):
            c = current[i]
            if c is not None:
                if ts <= c.close_time:
                    # Common case: same period. ts >= open_time holds because ticks are ordered.
                    if price > c.high:
                        c.high = price
                    elif price < c.low:
                        c.low = price
                    c.close = price
                    c.volume += volume
                    c.trades += traded
                    continue
                c.closed = True
                closed.append(c)
                if c.close_time > self._watermark:
                    self._watermark = c.close_time
            open_time = ts - ts % length
            current[i] = Candle(
                self.symbol,
                self._intervals[i],
                open_time,
                open_time + length - 1,
                price,
                price,
                price,
                price,
                volume,
                traded,
            )
        return closed

    def flush(self, now_ms: int) -> list[Candle]:
        """Close the current candles whose ``close_time < now_ms`` (quiet symbols)."""
        closed: list[Candle] = []
        current = self._current
        for i, c in enumerate(current):
            if c is not None and c.close_time < now_ms:
                c.closed = True
                closed.append(c)
                current[i] = None
                if c.close_time > self._watermark:
                    self._watermark = c.close_time
        return closed

    def current(self, interval: str) -> Candle | None:
        """A copy of the in-progress candle of ``interval`` (``closed=False``), if any."""
        try:
            i = self._intervals.index(interval)
        except ValueError:
            raise ValueError(f"interval {interval!r} is not built here") from None
        c = self._current[i]
        return None if c is None else _copy(c)
