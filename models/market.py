"""Market history: closed candles (live tickers and in-progress candles live in memory)."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class CandleRow(Model):
    """One closed OHLCV candle."""

    # (symbol, interval, open_time) is unique: re-writing a candle after a restart or a
    # leader change updates it instead of duplicating it.

    id = fields.BigIntField(primary_key=True)
    symbol = fields.CharField(max_length=21)
    interval = fields.CharField(max_length=3)
    open_time = fields.BigIntField()  # ms since the epoch
    open = fields.DecimalField(max_digits=30, decimal_places=12)
    high = fields.DecimalField(max_digits=30, decimal_places=12)
    low = fields.DecimalField(max_digits=30, decimal_places=12)
    close = fields.DecimalField(max_digits=30, decimal_places=12)
    volume = fields.DecimalField(max_digits=38, decimal_places=12)
    trades = fields.IntField()

    class Meta:
        table = "candles"
        unique_together = (("symbol", "interval", "open_time"),)
