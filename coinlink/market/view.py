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
        # symbol -> (ts, fresh body, stale body): the ticker's JSON, rendered on the first
        # read after each update (see ticker_json).
        self._bodies: dict[str, tuple[int, bytes, bytes]] = {}
        self.candles: dict[tuple[str, str], dict[str, Any]] = {}  # the newest of a channel
        self.last_closed: dict[tuple[str, str], dict[str, Any]] = {}

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
            self._bodies.pop(rest, None)
        elif kind == "candles":
            symbol, _, interval = rest.partition(":")
            self.candles[(symbol, interval)] = value
            if value.get("closed"):
                self.last_closed[(symbol, interval)] = value

    def ticker(self, symbol: str, now_ms: int) -> dict[str, Any]:
        """The contract's ``ticker``; fields are null until the first tick arrives."""
        entry = self.tickers.get(symbol)
        if entry is None:
            return {**dict.fromkeys(_TICKER_FIELDS), "symbol": symbol, "seq": 0, "stale": True}
        seq, data = entry
        return {**data, "seq": seq, "stale": now_ms - int(data["ts"]) > self.staleness_ms}

    def ticker_json(self, symbol: str, now_ms: int) -> bytes:
        """``orjson.dumps(self.ticker(symbol, now_ms))``, rendered once per update.

        The ticker endpoint is read far more often than a symbol ticks (thousands of reads
        a second, a few updates): both bodies (``stale`` false and true) are rendered on the
        first read after an update, and each read only picks one by the clock.
        """
        bodies = self._bodies.get(symbol)
        if bodies is None:
            entry = self.tickers.get(symbol)
            if entry is None:
                return orjson.dumps(self.ticker(symbol, now_ms))
            seq, data = entry
            bodies = self._bodies[symbol] = (
                int(data["ts"]),
                orjson.dumps({**data, "seq": seq, "stale": False}),
                orjson.dumps({**data, "seq": seq, "stale": True}),
            )
        ts, fresh, stale = bodies
        return stale if now_ms - ts > self.staleness_ms else fresh

    def current_candle(self, symbol: str, interval: str) -> dict[str, Any] | None:
        candle = self.candles.get((symbol, interval))
        if candle is None or candle.get("closed"):
            return None
        return candle

    def newest_candles(self, symbol: str, interval: str) -> list[dict[str, Any]]:
        """The candle that closed last and the current one, as far as known, oldest first
        (what may be newer than the database: the leader writes closed ones in batches)."""
        key = (symbol, interval)
        known = [c for c in (self.last_closed.get(key), self.candles.get(key)) if c is not None]
        return known if len(known) < 2 or known[0] is not known[1] else known[:1]

    def newest_open_time(self, symbol: str, interval: str) -> int | None:
        """The open time of the newest candle of the channel, closed or not: it moves when a
        candle closes (the candle cache's marker)."""
        candle = self.candles.get((symbol, interval))
        return None if candle is None else int(candle["open_time"])


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
