"""Drop bad upstream ticks before they reach candles, tickers and alerts.

``TickValidator.check(tick)`` returns ``None`` for a tick to keep, or a short, stable reason
string for one to drop. The reasons are used as a Prometheus label, so they are a closed set
(``REASONS``) and never contain tick data.

Design choices:

* Rules run cheapest and most fundamental first, and the first failing rule wins:
  ``unknown_symbol``, ``non_finite``, ``non_positive_price``, ``negative_volume``,
  ``crossed_quote``, ``future``, ``stale``, ``out_of_order``, ``absurd_jump``.
  ``non_finite`` must precede every comparison: ordering comparisons on a NaN ``Decimal``
  raise ``InvalidOperation`` instead of answering, which would crash the ingest loop.
* Per symbol the validator remembers only the last *accepted* price and timestamp (one tuple
  in a dict). A rejected tick never moves them: a single absurd print must not become the
  reference that the next, correct tick is measured against (it would be rejected as a jump
  back), and a far-future timestamp must not make every later tick look out of order.
* The jump test is ``|price - ref| * 100 > max_jump_pct * ref``: the same as
  ``|price / ref - 1| * 100 > max_jump_pct`` for a positive ``ref``, without a division.
  A move of exactly ``max_jump_pct`` is accepted.
* A sticky reference has a cost: after a long feed outage during which the real price moved
  by more than ``max_jump_pct``, every new tick would be rejected. ``reanchor_after_ms``
  (off by default) accepts a jump when the reference is older than that.
* Equal timestamps are in order (several trades in one millisecond are normal).
* Bid and ask are optional; each present one must be finite, and when both are present
  ``bid <= ask`` (a locked book, ``bid == ask``, is accepted).

The clock is injected (milliseconds since the epoch) so tests can drive time.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from decimal import Decimal
from typing import Final

from coinlink.market.types import Tick
from coinlink.wire import now_ms

UNKNOWN_SYMBOL: Final = "unknown_symbol"
NON_FINITE: Final = "non_finite"
NON_POSITIVE_PRICE: Final = "non_positive_price"
NEGATIVE_VOLUME: Final = "negative_volume"
CROSSED_QUOTE: Final = "crossed_quote"
FUTURE: Final = "future"
STALE: Final = "stale"
OUT_OF_ORDER: Final = "out_of_order"
ABSURD_JUMP: Final = "absurd_jump"

OUT_OF_RANGE: Final = "out_of_range"
# What the candles table stores (numeric(30,12) and (38,12)): beyond it a tick is noise.
MAX_PRICE: Final = Decimal(10) ** 17
MAX_VOLUME: Final = Decimal(10) ** 25

REASONS: Final[tuple[str, ...]] = (
    UNKNOWN_SYMBOL,
    NON_FINITE,
    NON_POSITIVE_PRICE,
    NEGATIVE_VOLUME,
    OUT_OF_RANGE,
    CROSSED_QUOTE,
    FUTURE,
    STALE,
    OUT_OF_ORDER,
    ABSURD_JUMP,
)
"""Every reason ``check`` can return, so metrics can be pre-registered at zero."""

_ZERO: Final = Decimal(0)


class TickValidator:
    """Per-symbol sanity checks for incoming ticks; see the module docstring."""

    __slots__ = (
        "_clock",
        "_last",
        "_max_age_ms",
        "_max_future_ms",
        "_max_jump_pct",
        "_reanchor_after_ms",
        "_symbols",
    )

    def __init__(
        self,
        max_jump_pct: Decimal = Decimal(20),
        max_future_ms: int = 5_000,
        max_age_ms: int = 60_000,
        clock: Callable[[], int] = now_ms,
        symbols: Collection[str] | None = None,
        reanchor_after_ms: int | None = None,
    ) -> None:
        if not max_jump_pct.is_finite() or max_jump_pct <= 0:
            raise ValueError("max_jump_pct must be a positive finite Decimal")
        if max_future_ms < 0 or max_age_ms < 0:
            raise ValueError("max_future_ms and max_age_ms must not be negative")
        if reanchor_after_ms is not None and reanchor_after_ms < 0:
            raise ValueError("reanchor_after_ms must not be negative")
        self._max_jump_pct = max_jump_pct
        self._max_future_ms = max_future_ms
        self._max_age_ms = max_age_ms
        self._clock = clock
        # frozenset: O(1) membership, and a caller mutating its own set later changes nothing.
        self._symbols = frozenset(symbols) if symbols is not None else None
        self._reanchor_after_ms = reanchor_after_ms
        # symbol -> (last accepted price, last accepted ts)
        self._last: dict[str, tuple[Decimal, int]] = {}

    def check(self, tick: Tick) -> str | None:
        """The reason to drop ``tick``, or ``None`` to keep it (which also records it)."""
        symbol = tick.symbol
        if self._symbols is not None and symbol not in self._symbols:
            return UNKNOWN_SYMBOL

        price = tick.price
        volume = tick.volume
        bid = tick.bid
        ask = tick.ask
        if not (
            price.is_finite()
            and volume.is_finite()
            and (bid is None or bid.is_finite())
            and (ask is None or ask.is_finite())
        ):
            return NON_FINITE
        if price <= _ZERO:
            return NON_POSITIVE_PRICE
        if volume < _ZERO:
            return NEGATIVE_VOLUME
        if price >= MAX_PRICE or volume >= MAX_VOLUME:
            return OUT_OF_RANGE
        if bid is not None and ask is not None and bid > ask:
            return CROSSED_QUOTE

        ts = tick.ts
        now = self._clock()
        if ts > now + self._max_future_ms:
            return FUTURE
        if ts < now - self._max_age_ms:
            return STALE

        last = self._last.get(symbol)
        if last is not None:
            ref_price, ref_ts = last
            if ts < ref_ts:
                return OUT_OF_ORDER
            if abs(price - ref_price) * 100 > self._max_jump_pct * ref_price and (
                self._reanchor_after_ms is None or ts - ref_ts <= self._reanchor_after_ms
            ):
                return ABSURD_JUMP

        self._last[symbol] = (price, ts)
        return None
