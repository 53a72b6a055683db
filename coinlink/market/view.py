"""Each worker's view of the live market, fed by its bus subscription.

REST reads of tickers and current candles come from here, never from a database or a Redis
round trip per request: the leader publishes every change on the bus, and every worker
keeps the newest message of each ``ticker:SYM`` and ``candles:SYM:INT`` channel in memory.
At start the view fills itself from each channel's last message in the bus history.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import structlog

from coinlink.bus import Bus, BusError, Subscription
from coinlink.market.types import INTERVALS

log = structlog.get_logger(logger_name="coinlink.market.view")


class MarketView:
    def __init__(self, bus: Bus, symbols: list[str], staleness_s: float) -> None:
        self.bus = bus
        self.symbols = symbols
        self.staleness_ms = int(staleness_s * 1000)
        self.tickers: dict[str, tuple[int, dict[str, Any]]] = {}
        # symbol -> (ts, fresh body, stale body): the ticker's JSON, rendered on the first
        # read after each update (see ticker_json).
        self._bodies: dict[str, tuple[int, bytes, bytes]] = {}
        self.candles: dict[tuple[str, str], dict[str, Any]] = {}
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    def channels(self) -> list[str]:
        return [f"ticker:{s}" for s in self.symbols] + [
            f"candles:{s}:{i}" for s in self.symbols for i in INTERVALS
        ]

    async def start(self) -> None:
        """Start following the bus in the background (a worker boots even without Redis)."""
        self._task = asyncio.create_task(self._follow(), name="market-view")

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        pause = 0.5
        while True:
            try:
                if self._subscription is None:
                    self._subscription = self.bus.subscription()
                    await self._subscription.subscribe(*self.channels())
                    # Subscribed first, then history: nothing published between is missed.
                    for channel in self.channels():
                        last = await self.bus.last_seq(channel)
                        for message in await self.bus.history(channel, max(0, last - 1)) or []:
                            self._apply(message.channel, message.seq, message.data)
                async for message in self._subscription:
                    self._apply(message.channel, message.seq, message.data)
                return  # closed
            except BusError as exc:
                log.warning("market_view_waiting_for_bus", error=str(exc))
                if self._subscription is not None:
                    with contextlib.suppress(BusError):
                        await self._subscription.close()
                    self._subscription = None
                await asyncio.sleep(pause)
                pause = min(pause * 2, 10.0)

    def _apply(self, channel: str, seq: int, data: bytes) -> None:
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
