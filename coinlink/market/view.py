"""Each worker's view of the live market, fed by the worker's hub.

REST reads of tickers and current candles come from here, never from a database or a Redis
round trip per request: the leader publishes every change on the bus, and the worker's
:class:`~coinlink.realtime.hub.Hub` (its one bus subscription) hands every ``ticker:SYM``
and ``candles:SYM:INT`` message to :meth:`MarketView.apply`, newest last.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog

log = structlog.get_logger(logger_name="coinlink.market.view")


class MarketView:
    def __init__(self, symbols: list[str], staleness_s: float) -> None:
        self.symbols = symbols
        self.staleness_ms = int(staleness_s * 1000)
        self.tickers: dict[str, tuple[int, dict[str, Any]]] = {}
        self.candles: dict[tuple[str, str], dict[str, Any]] = {}

    def apply(self, channel: str, seq: int, data: bytes) -> None:
        """Take one market message (the worker's hub calls this for every one, in order)."""
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("undecodable_market_message", channel=channel)
            return
        kind, _, rest = channel.partition(":")
        if kind == "ticker":
            # The bus delivers in order; the newest message wins (even after a Redis
            # reset restarted the sequence).
            self.tickers[rest] = (seq, value)
        elif kind == "candles":
            symbol, _, interval = rest.partition(":")
            self.candles[(symbol, interval)] = value

    def ticker(self, symbol: str, now_ms: int) -> dict[str, Any]:
        """The contract's ``ticker``; fields are null until the first tick arrives."""
        entry = self.tickers.get(symbol)
        if entry is None:
            return {**dict.fromkeys(_TICKER_FIELDS), "symbol": symbol, "seq": 0, "stale": True}
        seq, data = entry
        return {**data, "seq": seq, "stale": now_ms - int(data["ts"]) > self.staleness_ms}

    def current_candle(self, symbol: str, interval: str) -> dict[str, Any] | None:
        candle = self.candles.get((symbol, interval))
        if candle is None or candle.get("closed"):
            return None
        return candle


_TICKER_FIELDS = (
    "price",
    "bid",
    "ask",
    "open_24h",
    "high_24h",
    "low_24h",
    "volume_24h",
    "quote_volume_24h",
    "change_24h",
    "change_pct_24h",
    "ts",
)
