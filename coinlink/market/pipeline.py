"""The ingest pipeline's synchronous core: a tick in, the state updated, what to publish out.

For each tick: validation (the drop reason is returned) → rolling 24 h ticker → candles for
every interval. :meth:`Pipeline.take_messages` then hands over, for one bus round trip, the
candles that closed (``closed: true``, once) followed by the newest ticker and current candle
of every symbol the batch touched: subscribers get every candle close and the newest price,
not every tick. No I/O here: :mod:`coinlink.market.ingest` runs it under the leader lease.
"""

from __future__ import annotations

from typing import Any

import orjson

from coinlink import channels
from coinlink.market.candles import CandleBuilder
from coinlink.market.tick_validator import TickValidator
from coinlink.market.ticker import TickerState
from coinlink.market.types import INTERVALS, Candle, Tick, candle_dict


class Pipeline:
    """The synchronous core: one tick in, state updated, what to publish collected."""

    def __init__(self, symbols: list[str], validator: TickValidator) -> None:
        self.validator = validator
        self.tickers = {symbol: TickerState(symbol) for symbol in symbols}
        self.candles = {symbol: CandleBuilder(symbol) for symbol in symbols}
        self.closed: list[Candle] = []
        self.touched: set[str] = set()
        # The market's clock: the newest accepted tick time. Quiet candles close by it,
        # not by ours, so a replay of old data or a lagging exchange builds whole candles.
        self.market_ms: int | None = None

    def apply(self, tick: Tick) -> str | None:
        """Apply one tick; the drop reason, or None when accepted."""
        reason = self.validator.check(tick)
        if reason is not None:
            return reason
        ticker = self.tickers.get(tick.symbol)
        builder = self.candles.get(tick.symbol)
        if ticker is None or builder is None:
            return "unknown_symbol"
        ticker.add(tick)
        self.closed.extend(builder.add(tick))
        self.touched.add(tick.symbol)
        if self.market_ms is None or tick.ts > self.market_ms:
            self.market_ms = tick.ts
        return None

    def flush_quiet(self, at_ms: int) -> None:
        for symbol, builder in self.candles.items():
            closed = builder.flush(at_ms)
            if closed:
                self.closed.extend(closed)
                self.touched.add(symbol)

    def take_messages(self, at_ms: int) -> tuple[list[tuple[str, bytes]], list[Candle]]:
        """Messages for the bus (closes first, then the newest state) and the closed
        candles to store; resets the batch."""
        closed, self.closed = self.closed, []
        touched, self.touched = self.touched, set()
        messages = [
            (channels.candles(c.symbol, c.interval), orjson.dumps(candle_dict(c))) for c in closed
        ]
        for symbol in sorted(touched):
            ticker = self.tickers[symbol]
            if ticker.last_ts is not None:
                messages.append((channels.ticker(symbol), orjson.dumps(ticker.snapshot(at_ms))))
            builder = self.candles[symbol]
            for interval in INTERVALS:
                current = builder.current(interval)
                if current is not None:
                    messages.append(
                        (channels.candles(symbol, interval), orjson.dumps(candle_dict(current)))
                    )
        return messages, closed

    def snapshots(self, at_ms: int) -> list[dict[str, Any]]:
        return [
            dict(state.snapshot(at_ms))
            for state in self.tickers.values()
            if state.last_ts is not None
        ]
