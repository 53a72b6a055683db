"""Closed candles in the database: written by the ingest leader, read back by it and the API.

Writes are upserts on (symbol, interval, open time): a candle written twice, by a restart or
a new leader, is updated, never duplicated. History from a provider's backfill only fills
holes (``overwrite=False``).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

from coinlink.market.types import INTERVALS, Candle
from coinlink.wire import decimal_str
from models.market import CandleRow

CANDLES_WRITTEN = Counter("ingest_candles_written_total", "Closed candles upserted.")
_FIELDS = ("open_time", "open", "high", "low", "close", "volume", "trades")


async def store_candles(candles: list[Candle], *, overwrite: bool = True) -> None:
    """Upsert closed candles (or, with ``overwrite=False``, insert only missing ones)."""
    if not candles:
        return
    if not overwrite:
        await CandleRow.bulk_create(
            [_row(c) for c in candles],
            on_conflict=["symbol", "interval", "open_time"],
            ignore_conflicts=True,
        )
        return
    await CandleRow.bulk_create(
        [_row(c) for c in candles],
        on_conflict=["symbol", "interval", "open_time"],
        update_fields=["open", "high", "low", "close", "volume", "trades"],
    )
    CANDLES_WRITTEN.inc(len(candles))


def _candle_of_row(r: CandleRow) -> Candle:
    length = INTERVALS[r.interval]
    return Candle(
        r.symbol,
        r.interval,
        r.open_time,
        r.open_time + length - 1,
        r.open,
        r.high,
        r.low,
        r.close,
        r.volume,
        r.trades,
        closed=True,
    )


def _row(c: Candle) -> CandleRow:
    return CandleRow(
        symbol=c.symbol,
        interval=c.interval,
        open_time=c.open_time,
        open=c.open,
        high=c.high,
        low=c.low,
        close=c.close,
        volume=c.volume,
        trades=c.trades,
    )


async def latest_open_time(symbol: str, interval: str) -> int | None:
    """The open time of the newest stored candle, if any."""
    row = await CandleRow.filter(symbol=symbol, interval=interval).order_by("-open_time").first()
    return None if row is None else row.open_time


async def minutes_since(symbol: str, since_ms: int) -> list[Candle]:
    """The stored 1m candles of ``symbol`` opened at or after ``since_ms``, oldest first."""
    rows = await CandleRow.filter(symbol=symbol, interval="1m", open_time__gte=since_ms).order_by(
        "open_time"
    )
    return [_candle_of_row(row) for row in rows]


async def closed_candles(
    symbol: str, interval: str, start: int | None, end: int | None, limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` stored candles as the contract renders them, oldest first: from
    ``start`` forwards when it is given, otherwise the newest ones."""
    rows = CandleRow.filter(symbol=symbol, interval=interval)
    if start is not None:
        rows = rows.filter(open_time__gte=start)
    if end is not None:
        rows = rows.filter(open_time__lte=end)
    # Plain rows, not model objects: building 500 models took half the request.
    if start is not None:
        stored = await rows.order_by("open_time").limit(limit).values_list(*_FIELDS)
    else:
        newest = await rows.order_by("-open_time").limit(limit).values_list(*_FIELDS)
        stored = list(reversed(newest))
    length = INTERVALS[interval]
    # The shape of types.candle_dict, built from the row without a Candle in between.
    return [
        {
            "symbol": symbol,
            "interval": interval,
            "open_time": open_time,
            "close_time": open_time + length - 1,
            "open": decimal_str(open_),
            "high": decimal_str(high),
            "low": decimal_str(low),
            "close": decimal_str(close),
            "volume": decimal_str(volume),
            "trades": trades,
            "closed": True,
        }
        for open_time, open_, high, low, close, volume, trades in stored
    ]
