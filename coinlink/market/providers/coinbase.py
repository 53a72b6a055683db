"""Coinbase Exchange public market data: the ``ticker`` and ``heartbeat`` channels.

After connecting to ``ws_url`` the adapter subscribes to both channels for every configured
product (symbols are already ``BASE-QUOTE``); Coinbase drops a connection that has not
subscribed within five seconds, so the subscription is sent before anything is read.

* **Ticks.** A ``ticker`` message is one trade with the book's best bid and ask at that
  moment: ``price``, ``last_size`` as the volume, ``best_bid``/``best_ask``, ``time`` (ISO
  8601 → ms). A ticker without ``last_size`` (the snapshot some subscriptions start with) is
  a zero-volume quote tick. A crossed quote is left off the tick rather than the tick dropped.
* **Order.** ``sequence`` is per product and increases with every book event; a ticker whose
  sequence is at or below the last one seen on this connection is dropped (duplicate or out
  of order). Sequence tracking restarts with each connection, so a sequence reset on the
  exchange's side cannot silence a product for good.
* **Gaps come from trade ids, not from ``sequence``.** ``sequence`` counts every order-book
  event of the product, so consecutive tickers normally jump by hundreds: counting those
  jumps would report a "gap" on almost every message. Nor does a ``trade_id`` jump within a
  connection mean a loss: the ticker channel batches cascading matches into one message.
  What is reliable is the heartbeat's ``last_trade_id``: a trade announced by one heartbeat
  must have arrived as a ticker by the next heartbeat, a second later; if not, one gap is
  counted. Across a reconnect, the first ticker's ``trade_id`` is compared with the last one
  seen: a jump counts a gap (trades missed while disconnected) and an equal or older id is
  the subscription snapshot repeating a trade we already have, dropped.
* ``subscriptions`` is logged (and a product the exchange did not confirm is named); an
  ``error`` message is logged and forces a reconnect; other message types are ignored, as
  Coinbase asks of clients.
* **Backfill** pages ``GET {rest_url}/products/{id}/candles`` (at most 300 candles a request;
  rows ``[time_s, low, high, open, close, volume]``, newest first). Coinbase has no 4-hour
  granularity: ``4h`` is aggregated from hourly candles. Candles carry no trade count, so
  ``trades`` is 0.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, Unpack

import orjson
from websockets.asyncio.client import ClientConnection

from coinlink.market.providers.base import (
    MalformedError,
    OHLCVRow,
    ProviderError,
    normalize_symbols,
    parse_decimal,
    parse_int,
    parse_iso_ms,
    parse_optional_price,
)
from coinlink.market.providers.streaming import ExchangeError, StreamingProvider, StreamOptions
from coinlink.market.types import INTERVALS, Tick

DEFAULT_WS_URL: Final = "wss://ws-feed.exchange.coinbase.com"
DEFAULT_REST_URL: Final = "https://api.exchange.coinbase.com"
CHANNELS: Final = ("ticker", "heartbeat")
CANDLES_LIMIT: Final = 300
# Coinbase's granularities; 4h is built from 1h.
_GRANULARITY_S: Final = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 3600, "1d": 86400}
_ZERO: Final = Decimal(0)


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedError(f"{field}: missing")
    return value


class CoinbaseProvider(StreamingProvider):
    """Coinbase Exchange ticker ticks for the configured products."""

    name = "coinbase"
    default_stall_timeout_s = 5.0  # heartbeats arrive every second per product

    def __init__(
        self,
        symbols: list[str],
        *,
        ws_url: str = DEFAULT_WS_URL,
        rest_url: str = DEFAULT_REST_URL,
        **options: Unpack[StreamOptions],
    ) -> None:
        super().__init__(symbols, ws_url=ws_url, rest_url=rest_url, **options)
        self._products = frozenset(self.symbols)
        self._last_seq: dict[str, int] = {}  # per connection
        self._last_trade: dict[str, int] = {}  # kept across connections
        self._announced: dict[str, int] = {}  # last_trade_id of the previous heartbeat
        self._fresh: set[str] = set()  # products without a trade id yet on this connection

    def subscribe_message(self) -> dict[str, Any]:
        return {"type": "subscribe", "product_ids": list(self.symbols), "channels": list(CHANNELS)}

    def stream_url(self) -> str:
        return self.ws_url

    def on_connected(self) -> None:
        self._last_seq.clear()
        self._announced.clear()
        self._fresh = set(self.symbols)

    async def on_open(self, ws: ClientConnection) -> None:
        await ws.send(orjson.dumps(self.subscribe_message()).decode())

    def handle(self, message: Any) -> Tick | None:
        if not isinstance(message, dict):
            raise MalformedError("frame: not an object")
        kind = message.get("type")
        if kind == "ticker":
            return self._ticker(message)
        if kind == "heartbeat":
            self._heartbeat(message)
        elif kind == "subscriptions":
            self._subscriptions(message)
        elif kind == "error":
            # Logged by the reconnect loop ("market.disconnected", with this as the reason).
            raise ExchangeError(f"{message.get('message')}: {message.get('reason')}"[:300])
        elif not isinstance(kind, str):
            raise MalformedError("type: missing")
        return None

    def _ticker(self, msg: dict[str, Any]) -> Tick | None:
        # Every field is parsed before any state changes: a bad frame must not move state.
        product = _text(msg.get("product_id"), "product_id")
        sequence = parse_int(msg.get("sequence"), "sequence")
        price = parse_decimal(msg.get("price"), "price")
        ts = parse_iso_ms(msg.get("time"), "time")
        bid = parse_optional_price(msg.get("best_bid"), "best_bid")
        ask = parse_optional_price(msg.get("best_ask"), "best_ask")
        size = msg.get("last_size")
        volume = _ZERO if size is None else parse_decimal(size, "last_size", positive=False)
        raw_trade_id = msg.get("trade_id")
        trade_id = None if raw_trade_id is None else parse_int(raw_trade_id, "trade_id")
        if product not in self._products:
            self.count_dropped("unsubscribed product", product[:20])
            return None
        last_seq = self._last_seq.get(product)
        if last_seq is not None and sequence <= last_seq:
            self.count_dropped("duplicate or out-of-order sequence", product)
            return None
        self._last_seq[product] = sequence
        if trade_id is not None:
            last_trade = self._last_trade.get(product)
            if product in self._fresh and last_trade is not None:
                self._fresh.discard(product)
                if trade_id <= last_trade:
                    self.count_dropped("repeated trade after reconnect", product)
                    return None
                if trade_id > last_trade + 1:
                    self.count_gap(product, last_trade + 1, trade_id)
            self._fresh.discard(product)
            self._last_trade[product] = max(trade_id, last_trade or 0)
        if bid is not None and ask is not None and bid > ask:
            bid = ask = None
        return Tick(product, price, volume, ts, bid, ask, self.name)

    def _heartbeat(self, msg: dict[str, Any]) -> None:
        product = _text(msg.get("product_id"), "product_id")
        parse_int(msg.get("sequence"), "sequence")
        last_trade_id = parse_int(msg.get("last_trade_id"), "last_trade_id")
        parse_iso_ms(msg.get("time"), "time")
        if product not in self._products:
            return
        announced = self._announced.get(product)
        seen = self._last_trade.get(product)
        if announced is not None and seen is not None and seen < announced:
            # A trade the previous heartbeat announced never arrived as a ticker.
            self.count_gap(product, seen + 1, announced)
            self._last_trade[product] = announced  # count this hole once
        self._announced[product] = last_trade_id

    def _subscriptions(self, msg: dict[str, Any]) -> None:
        confirmed: set[str] = set()
        channels = msg.get("channels")
        for channel in channels if isinstance(channels, list) else []:
            if isinstance(channel, dict) and channel.get("name") == "ticker":
                ids = channel.get("product_ids")
                if isinstance(ids, list):
                    confirmed.update(i for i in ids if isinstance(i, str))
        missing = sorted(self._products - confirmed)
        if missing:
            self.log.warning("market.subscription_incomplete", missing=missing[:20])
        else:
            self.log.info("market.subscribed", products=len(self._products))

    async def backfill(
        self, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> list[OHLCVRow]:
        granularity = _GRANULARITY_S.get(interval)
        if granularity is None:
            raise ValueError(f"unknown interval {interval!r}")
        product = normalize_symbols([symbol])[0]  # also keeps the URL path clean
        length = INTERVALS[interval]
        first = -(-start_ms // length) * length  # the first interval start >= start_ms
        last = end_ms - end_ms % length  # the last interval start <= end_ms
        if first > last:
            return []
        step_ms = granularity * 1000
        # Hourly candles of a 4h interval run up to three hours past its start.
        fetch_end = last + length - step_ms
        rows: dict[int, OHLCVRow] = {}
        cursor = first
        while cursor <= fetch_end:
            window_end = min(cursor + (CANDLES_LIMIT - 1) * step_ms, fetch_end)
            page = await self.get_json(
                f"/products/{product}/candles",
                {"granularity": granularity, "start": _iso(cursor), "end": _iso(window_end)},
            )
            if not isinstance(page, list):
                raise ProviderError("candles: the answer is not a list")
            for raw in page:
                try:
                    row = _candle(raw)
                except MalformedError as exc:
                    self.count_malformed(f"candle {exc}")
                    continue
                if first <= row[0] <= fetch_end:
                    rows[row[0]] = row
            cursor = window_end + step_ms
        ordered = [rows[key] for key in sorted(rows)]
        if step_ms != length:
            ordered = _aggregate(ordered, length)
        return [row for row in ordered if first <= row[0] <= last]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _candle(raw: object) -> OHLCVRow:
    """``[time_s, low, high, open, close, volume]`` → (open_time_ms, o, h, l, c, v, 0)."""
    if not isinstance(raw, list) or len(raw) < 6:
        raise MalformedError("not a candle array")
    return (
        parse_int(raw[0], "time") * 1000,
        parse_decimal(raw[3], "open"),
        parse_decimal(raw[2], "high"),
        parse_decimal(raw[1], "low"),
        parse_decimal(raw[4], "close"),
        parse_decimal(raw[5], "volume", positive=False),
        0,
    )


def _aggregate(rows: list[OHLCVRow], length: int) -> list[OHLCVRow]:
    """Merge oldest-first rows into ``length``-ms intervals aligned to the epoch."""
    merged: list[OHLCVRow] = []
    for open_time, o, h, low, c, v, n in rows:
        start = open_time - open_time % length
        if merged and merged[-1][0] == start:
            _, mo, mh, ml, _, mv, mn = merged[-1]
            merged[-1] = (start, mo, max(mh, h), min(ml, low), c, mv + v, mn + n)
        else:
            merged.append((start, o, h, low, c, v, n))
    return merged
