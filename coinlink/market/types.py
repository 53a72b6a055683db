"""The values that flow through the market pipeline.

Prices and volumes are ``Decimal`` end to end (the API renders them as strings); market
timestamps are integer milliseconds since the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from coinlink.wire import decimal_str

INTERVALS: dict[str, int] = {
    "1m": 60_000,
    "5m": 5 * 60_000,
    "15m": 15 * 60_000,
    "1h": 60 * 60_000,
    "4h": 4 * 60 * 60_000,
    "1d": 24 * 60 * 60_000,
}
"""Candle intervals and their length in milliseconds."""


def served_spelling(symbol: str) -> str:
    """``symbol`` as symbols are served (``btc-usd`` is ``BTC-USD``). Only ASCII is folded:
    ``str.upper`` makes ``LINK`` of ``l\u0131nk`` (a dotless i) and ``SS`` of ``\u00df``,
    which must stay unknown symbols rather than become others."""
    symbol = symbol.strip()
    return symbol.upper() if symbol.isascii() else symbol


@dataclass(frozen=True, slots=True)
class Tick:
    """One price observation (a trade, or a quote update) of one symbol."""

    symbol: str  # BASE-QUOTE, upper case
    price: Decimal
    volume: Decimal  # base-currency quantity traded with this tick (0 for a pure quote)
    ts: int  # exchange time, ms since the epoch
    bid: Decimal | None = None
    ask: Decimal | None = None
    source: str = "unknown"  # provider name


@dataclass(slots=True)
class Candle:
    symbol: str
    interval: str
    open_time: int  # ms, inclusive, aligned to the interval (UTC epoch multiples)
    close_time: int  # ms, inclusive: open_time + length - 1
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int
    closed: bool = False


_DECIMAL_FIELDS = ("open", "high", "low", "close", "volume")


def candle_dict(candle: Candle) -> dict[str, Any]:
    """The contract's ``candle``, as REST, sockets and the bus carry it."""
    return {
        "symbol": candle.symbol,
        "interval": candle.interval,
        "open_time": candle.open_time,
        "close_time": candle.close_time,
        "open": decimal_str(candle.open),
        "high": decimal_str(candle.high),
        "low": decimal_str(candle.low),
        "close": decimal_str(candle.close),
        "volume": decimal_str(candle.volume),
        "trades": candle.trades,
        "closed": candle.closed,
    }


def candle_from_dict(data: dict[str, Any]) -> Candle:
    """The inverse of :func:`candle_dict` (decimals arrive as strings)."""
    values = {f.name: data[f.name] for f in fields(Candle)}
    for name in _DECIMAL_FIELDS:
        values[name] = Decimal(values[name])
    return Candle(**values)
