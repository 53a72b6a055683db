"""Binance spot public market data: the combined ``@trade`` + ``@ticker`` streams.

One connection to ``{ws_url}/stream?streams=btcusdt@ticker/btcusdt@trade/...`` carries every
configured symbol; frames are ``{"stream": "btcusdt@trade", "data": {...}}``.

* **Symbols.** Each configured ``BASE-QUOTE`` maps to Binance's ``BASEQUOTE`` (``BTC-USDT`` ↔
  ``BTCUSDT``). ``quote_aliases`` can map a quote currency, e.g. ``{"USD": "USDT"}`` lets the
  default ``BTC-USD`` list read ``BTCUSDT`` while ticks keep the configured name. A stream
  symbol outside the mapping is dropped (``stats["dropped"]``).
* **Trades become ticks** (``p`` price, ``q`` quantity as the volume, ``T`` trade time).
* **Bid/ask are merged, not emitted.** A ``24hrTicker`` frame (``b``/``a``, once a second)
  only updates the symbol's latest quote, which every following trade tick carries while it
  is at most ``quote_max_age_ms`` away from the trade. So one tick is one trade (no
  zero-volume ticks to skew trade counts or move the close to a stale ``c``), and a crossed
  or stale quote is never attached (the downstream validator would drop the *trade* for a
  crossed quote). The cost: a quote change on a symbol without trades is not visible until
  its next trade; on liquid USDT pairs that is milliseconds.
* **Sequence.** Trade ids ``t`` increase by one per symbol. Within a connection an id at or
  below the last one is dropped (duplicate or out of order) and a jump counts one gap. The
  last id survives reconnects, so trades missed while disconnected count as a gap too; the
  first trade of a new connection is never dropped, so a (hypothetical) id reset cannot
  silence a symbol for good.
* **Backfill** pages through ``GET {rest_url}/api/v3/klines`` (1000 rows a request). The last
  row may be the still-open candle when ``end_ms`` reaches the present.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final, Unpack

from coinlink.market.providers.base import (
    MalformedError,
    OHLCVRow,
    ProviderError,
    normalize_symbols,
    parse_decimal,
    parse_int,
    parse_optional_price,
)
from coinlink.market.providers.streaming import StreamingProvider, StreamOptions
from coinlink.market.types import INTERVALS, Tick

DEFAULT_WS_URL: Final = "wss://stream.binance.com:9443"
DEFAULT_REST_URL: Final = "https://api.binance.com"
KLINES_LIMIT: Final = 1000
_MAX_STREAMS: Final = 1024  # Binance's limit per connection


class BinanceProvider(StreamingProvider):
    """Binance trades (with merged bid/ask) for the configured symbols."""

    name = "binance"
    default_stall_timeout_s = 15.0  # ticker frames arrive every second per symbol

    def __init__(
        self,
        symbols: list[str],
        *,
        ws_url: str = DEFAULT_WS_URL,
        rest_url: str = DEFAULT_REST_URL,
        quote_aliases: Mapping[str, str] | None = None,
        quote_max_age_ms: int = 5_000,
        **options: Unpack[StreamOptions],
    ) -> None:
        super().__init__(symbols, ws_url=ws_url, rest_url=rest_url, **options)
        self.quote_aliases = {k.upper(): v.upper() for k, v in (quote_aliases or {}).items()}
        self.quote_max_age_ms = quote_max_age_ms
        self._to_ours: dict[str, str] = {}
        for symbol in self.symbols:
            exchange = self.exchange_symbol(symbol)
            if exchange in self._to_ours:
                raise ValueError(f"{symbol} and {self._to_ours[exchange]} both map to {exchange}")
            self._to_ours[exchange] = symbol
        if 2 * len(self._to_ours) > _MAX_STREAMS:
            raise ValueError(f"at most {_MAX_STREAMS // 2} symbols fit one Binance connection")
        self._last_trade: dict[str, int] = {}
        self._fresh: set[str] = set()  # symbols without a trade yet on this connection
        self._quotes: dict[str, tuple[Decimal | None, Decimal | None, int]] = {}

    def exchange_symbol(self, symbol: str) -> str:
        """``BTC-USDT`` → ``BTCUSDT`` (after applying ``quote_aliases``)."""
        base, _, quote = symbol.upper().partition("-")
        return base + self.quote_aliases.get(quote, quote)

    def stream_url(self) -> str:
        streams = "/".join(f"{s.lower()}@ticker/{s.lower()}@trade" for s in self._to_ours)
        return f"{self.ws_url}/stream?streams={streams}"

    def on_connected(self) -> None:
        self._fresh = set(self.symbols)

    def handle(self, message: Any) -> Tick | None:
        if not isinstance(message, dict):
            raise MalformedError("frame: not an object")
        data = message.get("data")
        if not isinstance(data, dict):
            if "result" in message and "id" in message:
                return None  # the answer to a request; we send none, but it is not bad data
            raise MalformedError("data: missing")
        event = data.get("e")
        if event == "trade":
            return self._trade(data)
        if event == "24hrTicker":
            self._quote(data)
            return None
        if not isinstance(event, str):
            raise MalformedError("e: missing")
        return None  # another event type: ignored

    def _symbol(self, raw: object) -> str | None:
        """Our symbol for a stream symbol, or ``None`` (counted as dropped) if unmapped."""
        symbol = self._to_ours.get(raw) if isinstance(raw, str) else None
        if symbol is None:
            self.count_dropped("unmapped symbol", str(raw)[:20])
        return symbol

    def _quote(self, data: dict[str, Any]) -> None:
        raw_symbol = _text(data.get("s"), "s")
        bid = parse_optional_price(data.get("b"), "b")
        ask = parse_optional_price(data.get("a"), "a")
        ts = parse_int(data.get("E"), "E")
        symbol = self._symbol(raw_symbol)
        if symbol is None:
            return
        if bid is not None and ask is not None and bid > ask:
            self._quotes.pop(symbol, None)  # a crossed book is no quote to attach
            return
        self._quotes[symbol] = (bid, ask, ts)

    def _trade(self, data: dict[str, Any]) -> Tick | None:
        # Every field is parsed before any state changes: a bad frame must not move ids.
        raw_symbol = _text(data.get("s"), "s")
        trade_id = parse_int(data.get("t"), "t")
        price = parse_decimal(data.get("p"), "p")
        volume = parse_decimal(data.get("q"), "q", positive=False)
        ts = parse_int(data.get("T"), "T")
        symbol = self._symbol(raw_symbol)
        if symbol is None:
            return None
        last = self._last_trade.get(symbol)
        fresh = symbol in self._fresh
        if last is not None:
            if trade_id <= last and not fresh:
                self.count_dropped("duplicate or out-of-order trade id", symbol)
                return None
            if trade_id > last + 1:
                self.count_gap(symbol, last + 1, trade_id)
        self._fresh.discard(symbol)
        self._last_trade[symbol] = trade_id
        bid = ask = None
        quote = self._quotes.get(symbol)
        if quote is not None and abs(ts - quote[2]) <= self.quote_max_age_ms:
            bid, ask = quote[0], quote[1]
        return Tick(symbol, price, volume, ts, bid, ask, self.name)

    async def backfill(
        self, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> list[OHLCVRow]:
        length = INTERVALS.get(interval)
        if length is None:
            raise ValueError(f"unknown interval {interval!r}")
        exchange = self.exchange_symbol(normalize_symbols([symbol])[0])
        rows: dict[int, OHLCVRow] = {}
        cursor = start_ms
        # A bound on requests even if the server ignored startTime.
        for _ in range((end_ms - start_ms) // (length * KLINES_LIMIT) + 2):
            if cursor > end_ms:
                break
            page = await self.get_json(
                "/api/v3/klines",
                {
                    "symbol": exchange,
                    "interval": interval,
                    "startTime": cursor,
                    "endTime": end_ms,
                    "limit": KLINES_LIMIT,
                },
            )
            if not isinstance(page, list):
                raise ProviderError("klines: the answer is not a list")
            newest: int | None = None
            for raw in page:
                try:
                    row = _kline(raw)
                except MalformedError as exc:
                    self.count_malformed(f"kline {exc}")
                    continue
                newest = row[0] if newest is None else max(newest, row[0])
                if start_ms <= row[0] <= end_ms:
                    rows[row[0]] = row
            if len(page) < KLINES_LIMIT or newest is None:
                break
            cursor = newest + length
        return [rows[key] for key in sorted(rows)]


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedError(f"{field}: missing")
    return value


def _kline(raw: object) -> OHLCVRow:
    """``[openTime, "o", "h", "l", "c", "v", closeTime, quoteVolume, trades, ...]``."""
    if not isinstance(raw, list) or len(raw) < 9:
        raise MalformedError("not a kline array")
    return (
        parse_int(raw[0], "open_time"),
        parse_decimal(raw[1], "open"),
        parse_decimal(raw[2], "high"),
        parse_decimal(raw[3], "low"),
        parse_decimal(raw[4], "close"),
        parse_decimal(raw[5], "volume", positive=False),
        parse_int(raw[8], "trades"),
    )
