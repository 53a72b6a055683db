"""The wire format of a tick an admin injects: written by the API, read by the ingest leader.

``{"symbol", "price", "volume", "ts"}`` on the ``ingest:admin-ticks`` channel, decimals as
strings; the leader runs it through the providers' path (validation, candles, fan-out).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from coinlink.market.types import Tick
from coinlink.wire import decimal_str

SOURCE = "admin"


def message(symbol: str, price: Decimal, volume: Decimal, ts: int) -> dict[str, Any]:
    return {"symbol": symbol, "price": decimal_str(price), "volume": decimal_str(volume), "ts": ts}


def decode(data: bytes) -> Tick:
    """The tick a message carries; ``ValueError`` when it is not one."""
    try:
        raw = orjson.loads(data)
        return Tick(
            symbol=raw["symbol"],
            price=Decimal(raw["price"]),
            volume=Decimal(raw["volume"]),
            ts=int(raw["ts"]),
            source=SOURCE,
        )
    except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
        raise ValueError(f"not an admin tick: {exc}") from None
