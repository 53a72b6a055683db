"""What the market API serves: assets, tickers, candles and the summary, and admin ticks.

Tickers, current candles and the summary come from the worker's :class:`MarketView` (no
I/O per request); closed candles from the database; an admin tick goes to the ingest leader
over the bus.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from coinlink import channels
from coinlink.bus import Bus
from coinlink.market import admin_ticks, candle_store
from coinlink.market.candle_cache import CandleCache, Rendered, complete, merge
from coinlink.market.precision import MAX_DECIMALS, price_decimals
from coinlink.market.types import served_spelling
from coinlink.market.view import MarketView
from coinlink.wire import now_ms

SUMMARY_TTL_MS = 60_000
"""How long a worker serves the same summary (the contract allows up to 5 minutes): 24 h
changes move slowly, and a minute keeps the ranking close to the tickers."""
SUMMARY_SIZE = 5
NAMES = {
    "BTC": "Bitcoin",
    "ETH": "Ethereum",
    "SOL": "Solana",
    "XRP": "XRP",
    "ADA": "Cardano",
    "DOGE": "Dogecoin",
    "AVAX": "Avalanche",
    "DOT": "Polkadot",
    "LINK": "Chainlink",
    "LTC": "Litecoin",
    "USDT": "Tether",
    "USD": "US Dollar",
    "EUR": "Euro",
}


class UnknownSymbol(Exception):
    def __init__(self, symbol: str) -> None:
        super().__init__(f"unknown symbol {symbol}")
        self.symbol = symbol


class AdminTicksDisabled(Exception):
    SETTING = "COINLINK_ADMIN_TICKS"

    def __init__(self) -> None:
        super().__init__(
            f"admin tick injection is off on this instance; the operator enables it with "
            f"{self.SETTING}=true"
        )


class NoIngestLeader(Exception):
    def __init__(self) -> None:
        super().__init__("no ingest leader is running yet; retry shortly")


class MarketService:
    def __init__(
        self, symbols: list[str], view: MarketView, bus: Bus, *, admin_ticks_enabled: bool
    ) -> None:
        self.symbols = symbols
        self._known = frozenset(symbols)
        self.view = view
        self.bus = bus
        self.admin_ticks_enabled = admin_ticks_enabled
        self._summary: tuple[int, bytes] | None = None  # (valid until, body)
        self.candle_cache = CandleCache()

    def symbol(self, raw: str) -> str:
        """``raw`` as a served symbol (``btc-usd`` → ``BTC-USD``), else :class:`UnknownSymbol`."""
        symbol = served_spelling(raw)
        if symbol not in self._known:
            raise UnknownSymbol(symbol)
        return symbol

    def assets(self) -> list[dict[str, Any]]:
        items = []
        now = now_ms()
        for symbol in self.symbols:
            base, quote = symbol.split("-")
            price = self.view.ticker(symbol, now)["price"]
            items.append(
                {
                    "symbol": symbol,
                    "base": base,
                    "quote": quote,
                    "name": NAMES.get(base, base),
                    # At the current price; the finest until the first tick.
                    "price_precision": MAX_DECIMALS
                    if price is None
                    else price_decimals(Decimal(price)),
                    "status": "trading",
                }
            )
        return items

    def tickers(self, wanted: list[str] | None) -> list[dict[str, Any]]:
        """The tickers of ``wanted`` (raw symbols, duplicates once), or of every symbol."""
        symbols = self.symbols if wanted is None else [self.symbol(s) for s in wanted]
        now = now_ms()
        return [self.view.ticker(symbol, now) for symbol in dict.fromkeys(symbols)]

    def ticker_json(self, raw: str) -> bytes:
        # The view's cached bytes: no dict copy or JSON rendering per request.
        return self.view.ticker_json(self.symbol(raw), now_ms())

    async def candles_json(
        self, raw: str, interval: str, start: int | None, end: int | None, limit: int
    ) -> bytes:
        """``{"items": [...]}``: closed candles from the database (through the worker's
        :class:`CandleCache`), then those the view knows newer (the one that closed last,
        until it is stored, and the current one) inside ``[start, end]``; at most
        ``limit``, oldest first."""
        symbol = self.symbol(raw)
        key = (symbol, interval, start, end, limit)
        marker = self.view.newest_open_time(symbol, interval)
        stored = self.candle_cache.get(key, marker)
        if stored is None:
            items = await candle_store.closed_candles(symbol, interval, start, end, limit)
            stored = Rendered.of(items)
            # Filled under the marker read before the query: a candle that closed meanwhile
            # makes the entry stale at once, never wrongly fresh.
            if complete(stored, self.view.last_closed.get((symbol, interval)), start, end):
                self.candle_cache.put(key, marker, stored)
        return merge(stored, self.view.newest_candles(symbol, interval), start, end, limit)

    def summary_json(self) -> bytes:
        """Gainers, losers and volume leaders, computed at most once per TTL per worker."""
        now = now_ms()
        if self._summary is not None and now < self._summary[0]:
            return self._summary[1]
        live = [
            t
            for t in (self.view.ticker(s, now) for s in self.view.symbols)
            if t["price"] is not None
        ]

        def change(ticker: dict[str, Any]) -> Decimal:
            return Decimal(ticker["change_pct_24h"])

        ranked = sorted(live, key=change, reverse=True)
        # Gainers went up and losers down: an unchanged asset is neither.
        body = orjson.dumps(
            {
                "gainers": [t for t in ranked if change(t) > 0][:SUMMARY_SIZE],
                "losers": [t for t in reversed(ranked) if change(t) < 0][:SUMMARY_SIZE],
                "volume_leaders": sorted(
                    live, key=lambda t: Decimal(t["quote_volume_24h"]), reverse=True
                )[:SUMMARY_SIZE],
                "generated_at": now,
            }
        )
        self._summary = (now + SUMMARY_TTL_MS, body)
        return body

    def ensure_admin_ticks(self) -> None:
        if not self.admin_ticks_enabled:
            raise AdminTicksDisabled

    async def inject_tick(
        self, raw: str, price: Decimal, volume: Decimal, ts: int | None
    ) -> dict[str, Any]:
        """Send a tick to the ingest leader (on any instance); what was sent."""
        self.ensure_admin_ticks()
        message = admin_ticks.message(
            self.symbol(raw), price, volume, now_ms() if ts is None else ts
        )
        # With no leader (starting up, or a take-over under way) nobody listens and the tick
        # would be lost.
        if await self.bus.get(channels.INGEST_HEARTBEAT_KEY) is None:
            raise NoIngestLeader
        await self.bus.publish(channels.ADMIN_TICKS, orjson.dumps(message))
        return message
