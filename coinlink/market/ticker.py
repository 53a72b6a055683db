"""Rolling 24-hour ticker statistics of one symbol.

The window slides with ``now``: it is not a UTC day. Ticks are summarised in fixed time
buckets (one minute by default) of open/high/low/volume/quote volume, so memory per symbol
is bounded (about ``window_ms / bucket_ms`` buckets) whatever the tick rate.

Window definition (exact, and what the tests' brute-force reference computes too): a tick
counts for ``snapshot(now_ms)`` when the *start of its bucket* is ``> now_ms - window_ms``.
With ``start = ts - ts % bucket_ms`` the window therefore never includes a tick older than
``window_ms``, and always includes ticks younger than ``window_ms - bucket_ms``; ticks in
between (the oldest minute) drop out up to one bucket early. That is the precision trade-off
of buckets: the window edge has the resolution of the bucket size. Ticks stamped after
``now_ms`` (exchange clocks run a little ahead) do count.

Fields (the contract's ``ticker`` without ``seq`` and ``stale``, which the caller adds):

* ``price``/``ts``: the last tick. ``bid``/``ask``: the last value seen of each (a trade tick
  without a quote keeps the previous quote rather than blanking it); ``None`` until one came.
* ``open_24h``: the price of the oldest tick inside the window (so, while the symbol is
  younger than the window, its first tick ever). ``high_24h``/``low_24h``: extremes inside
  the window, quotes (volume 0) included, as for candles.
* ``volume_24h``: sum of base volume; ``quote_volume_24h``: sum of ``price * volume``.
* ``change_24h = price - open_24h``; ``change_pct_24h = change / open * 100`` rounded half-even
  to 0.01.
* A symbol idle for longer than the window has nothing inside it: open, high and low are the
  last price, volumes are 0, the change is 0 (the price did not move in 24 h).

Cost: ``add()`` is O(1) amortised (a few Decimal operations on the newest bucket; a small
object per new bucket). ``stats()``/``snapshot()`` are O(log n) amortised (a bisection and
two combinations; rendering is most of a snapshot's cost): the closed buckets form a two-stack
sliding-window aggregate (a front list with suffix aggregates plus a back list with a
running aggregate), so no window rescans and no subtraction (sums stay exact, max/min need
no recomputation when the maximum leaves the window). Buckets are physically dropped by
``add()`` once they are out of the window for every ``now_ms >= ts of the last tick -
bucket_ms``; ``snapshot`` itself does not drop anything, so a slightly earlier ``now_ms``
(the server clock behind an exchange timestamp) still sees a complete window.

Sums are exact as long as they fit in the current decimal context's precision (28
significant digits by default), far beyond realistic volumes. Ticks older than the previous
one are ignored; the validator already drops them.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Final, TypedDict

from coinlink.market.types import Tick
from coinlink.wire import decimal_str

_ZERO: Final = Decimal(0)
_HUNDRED: Final = Decimal(100)
_PCT_QUANTUM: Final = Decimal("0.01")

# (open, high, low, volume, quote_volume) of a run of consecutive buckets, oldest first.
_Agg = tuple[Decimal, Decimal, Decimal, Decimal, Decimal]


@dataclass(frozen=True, slots=True)
class TickerStats:
    """The rolling statistics as Decimals (for sorting, alerts); ``snapshot`` renders them."""

    symbol: str
    price: Decimal
    bid: Decimal | None
    ask: Decimal | None
    open_24h: Decimal
    high_24h: Decimal
    low_24h: Decimal
    volume_24h: Decimal
    quote_volume_24h: Decimal
    change_24h: Decimal
    change_pct_24h: Decimal
    ts: int


class TickerSnapshot(TypedDict):
    """The contract's ``ticker`` without ``seq`` and ``stale``; decimals as strings."""

    symbol: str
    price: str
    bid: str | None
    ask: str | None
    open_24h: str
    high_24h: str
    low_24h: str
    volume_24h: str
    quote_volume_24h: str
    change_24h: str
    change_pct_24h: str
    ts: int


class _Bucket:
    __slots__ = ("high", "low", "open", "quote_volume", "start", "volume")

    def __init__(self, start: int, price: Decimal, volume: Decimal, quote: Decimal) -> None:
        self.start = start
        self.open = price
        self.high = price
        self.low = price
        self.volume = volume
        self.quote_volume = quote

    def agg(self) -> _Agg:
        return (self.open, self.high, self.low, self.volume, self.quote_volume)


def _combine(a: _Agg, b: _Agg) -> _Agg:
    """``a`` followed by ``b`` (``a`` is older)."""
    return (
        a[0],
        a[1] if a[1] >= b[1] else b[1],
        a[2] if a[2] <= b[2] else b[2],
        a[3] + b[3],
        a[4] + b[4],
    )


def _suffixes(aggs: Sequence[_Agg]) -> list[_Agg]:
    """``out[j]`` = combination of ``aggs[j:]``."""
    out = list(aggs)
    for j in range(len(out) - 2, -1, -1):
        out[j] = _combine(out[j], out[j + 1])
    return out


class TickerState:
    """Rolling-window statistics of one symbol; see the module docstring."""

    __slots__ = (
        "_ask",
        "_back",
        "_back_agg",
        "_back_starts",
        "_bid",
        "_bucket_ms",
        "_front_head",
        "_front_raw",
        "_front_starts",
        "_front_suffix",
        "_newest",
        "_price",
        "_ts",
        "symbol",
        "window_ms",
    )

    def __init__(self, symbol: str, window_ms: int = 86_400_000, bucket_ms: int = 60_000) -> None:
        if bucket_ms <= 0 or window_ms <= 0 or window_ms % bucket_ms:
            raise ValueError("window_ms must be a positive multiple of bucket_ms")
        self.symbol = symbol
        self.window_ms = window_ms
        self._bucket_ms = bucket_ms
        self._price = _ZERO
        self._ts: int | None = None
        self._bid: Decimal | None = None
        self._ask: Decimal | None = None
        # The bucket of the last tick: the only one still changing.
        self._newest: _Bucket | None = None
        # Closed buckets, oldest first, split in two for the sliding-window aggregate.
        # Front: starts, each bucket's own aggregate, and suffix aggregates (entry j covers
        # buckets j.. of the front); entries before _front_head are dropped.
        self._front_starts: list[int] = []
        self._front_raw: list[_Agg] = []
        self._front_suffix: list[_Agg] = []
        self._front_head = 0
        # Back: newer closed buckets with one running aggregate.
        self._back_starts: list[int] = []
        self._back: list[_Agg] = []
        self._back_agg: _Agg | None = None

    @property
    def bucket_ms(self) -> int:
        return self._bucket_ms

    @property
    def last_ts(self) -> int | None:
        return self._ts

    def add(self, tick: Tick) -> None:
        """Account for ``tick`` (ticks of this symbol, in timestamp order)."""
        if tick.symbol != self.symbol:
            raise ValueError(f"tick for {tick.symbol!r} given to the {self.symbol!r} ticker")
        ts = tick.ts
        if self._ts is not None and ts < self._ts:
            return
        price = tick.price
        volume = tick.volume
        self._price = price
        self._ts = ts
        if tick.bid is not None:
            self._bid = tick.bid
        if tick.ask is not None:
            self._ask = tick.ask
        quote = price * volume if volume else _ZERO  # skip the multiply for pure quotes

        start = ts - ts % self._bucket_ms
        b = self._newest
        if b is not None and b.start == start:
            if price > b.high:
                b.high = price
            elif price < b.low:
                b.low = price
            if volume:
                b.volume += volume
                b.quote_volume += quote
            return

        # A new bucket: the previous one is closed and joins the back list.
        if b is not None:
            a = b.agg()
            self._back_starts.append(b.start)
            self._back.append(a)
            self._back_agg = a if self._back_agg is None else _combine(self._back_agg, a)
        self._newest = _Bucket(start, price, volume, quote)
        # Out of the window for any now >= ts - bucket_ms (see the module docstring).
        self._evict(start - self.window_ms - self._bucket_ms)

    def _evict(self, limit: int) -> None:
        """Drop closed buckets whose start is <= ``limit``."""
        while True:
            if self._front_head < len(self._front_starts):
                if self._front_starts[self._front_head] > limit:
                    return
                self._front_head += 1
            elif self._back_starts and self._back_starts[0] <= limit:
                self._flip()
            else:
                return

    def _flip(self) -> None:
        """Move the back list into the front list (recomputing suffix aggregates)."""
        head = self._front_head
        starts = self._front_starts[head:] + self._back_starts
        raw = self._front_raw[head:] + self._back
        # Suffixes change for every entry, so recompute them all. Each bucket is moved once
        # from back to front; the front entries still kept are normally few (add() drops
        # them about one bucket after they leave the window), so this is amortised O(1).
        self._front_starts = starts
        self._front_raw = raw
        self._front_suffix = _suffixes(raw)
        self._front_head = 0
        self._back_starts = []
        self._back = []
        self._back_agg = None

    def _window(self, lo: int) -> _Agg | None:
        """Aggregate of every bucket whose start is ``> lo``."""
        newest = self._newest
        if newest is None or newest.start <= lo:
            return None  # buckets are ordered: nothing newer exists
        past: _Agg | None = None
        j = bisect_right(self._front_starts, lo, self._front_head)
        if j < len(self._front_starts):
            past = self._front_suffix[j]
            if self._back_agg is not None:
                past = _combine(past, self._back_agg)
        elif self._back_starts:
            if self._back_starts[0] > lo:
                past = self._back_agg
            else:
                # The edge is inside the back list: flip so a suffix answers it.
                self._flip()
                j = bisect_right(self._front_starts, lo)
                if j < len(self._front_starts):
                    past = self._front_suffix[j]
        current = newest.agg()
        return current if past is None else _combine(past, current)

    def stats(self, now_ms: int) -> TickerStats:
        """The statistics of the window ending at ``now_ms``, as Decimals."""
        if self._ts is None:
            raise LookupError(f"no tick of {self.symbol} yet")
        price = self._price
        agg = self._window(now_ms - self.window_ms)
        if agg is None:
            open_, high, low, volume, quote = price, price, price, _ZERO, _ZERO
        else:
            open_, high, low, volume, quote = agg
        change = price - open_
        # open_ > 0 always (the validator drops non-positive prices); guard anyway.
        pct = change / open_ * _HUNDRED if open_ else _ZERO
        # Too many digits for the context (an absurd move): keep it unrounded, do not crash.
        with suppress(InvalidOperation):
            pct = pct.quantize(_PCT_QUANTUM, ROUND_HALF_EVEN)
        return TickerStats(
            symbol=self.symbol,
            price=price,
            bid=self._bid,
            ask=self._ask,
            open_24h=open_,
            high_24h=high,
            low_24h=low,
            volume_24h=volume,
            quote_volume_24h=quote,
            change_24h=change,
            change_pct_24h=pct,
            ts=self._ts,
        )

    def snapshot(self, now_ms: int) -> TickerSnapshot:
        """The contract's ticker fields except ``seq`` and ``stale``, decimals rendered."""
        s = self.stats(now_ms)
        return {
            "symbol": s.symbol,
            "price": decimal_str(s.price),
            "bid": None if s.bid is None else decimal_str(s.bid),
            "ask": None if s.ask is None else decimal_str(s.ask),
            "open_24h": decimal_str(s.open_24h),
            "high_24h": decimal_str(s.high_24h),
            "low_24h": decimal_str(s.low_24h),
            "volume_24h": decimal_str(s.volume_24h),
            "quote_volume_24h": decimal_str(s.quote_volume_24h),
            "change_24h": decimal_str(s.change_24h),
            "change_pct_24h": decimal_str(s.change_pct_24h),
            "ts": s.ts,
        }
