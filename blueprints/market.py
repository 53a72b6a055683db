"""/api/v2/market: assets, tickers, candles and the summary (public)."""

from __future__ import annotations

import time
from typing import Any, Literal

import orjson
from pydantic import Field, ValidationInfo, field_validator
from sanic import Blueprint, HTTPResponse, Request, json
from sanic_ext import openapi

from coinlink.errors import ApiError
from coinlink.market.ticker import render_decimal
from coinlink.market.types import INTERVALS
from coinlink.market.view import MarketView
from coinlink.validation import Query, parse_query
from models.market import CandleRow

bp = Blueprint("market", url_prefix="/api/v2/market")

SUMMARY_TTL_S = 60.0  # the contract allows up to 5 minutes
# Each worker computes it from its own view at most once a minute: no per-request I/O.
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


class UnknownSymbol(ApiError):
    status = 404
    code = "unknown_symbol"

    def __init__(self, symbol: str) -> None:
        super().__init__(f"unknown symbol {symbol}", details={"symbol": symbol})


class TickersQuery(Query):
    symbols: str | None = Field(default=None, max_length=2000)


class CandlesQuery(Query):
    interval: Literal["1m", "5m", "15m", "1h", "4h", "1d"] = "1m"
    start: int | None = Field(default=None, ge=0, le=10**14)
    end: int | None = Field(default=None, ge=0, le=10**14)
    limit: int = Field(default=500, ge=1, le=1000)

    @field_validator("end")
    @classmethod
    def _ordered(cls, end: int | None, info: ValidationInfo) -> int | None:
        start = info.data.get("start")
        if start is not None and end is not None and start > end:
            raise ValueError("end must not be before start")
        return end


def _view(request: Request) -> MarketView:
    view: MarketView = request.app.ctx.market
    return view


def _symbol(request: Request, raw: str) -> str:
    symbol = raw.strip().upper()
    if symbol not in request.app.ctx.settings.symbols:
        raise UnknownSymbol(symbol)
    return symbol


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@bp.get("/assets")
@openapi.definition(summary="The symbols this instance serves", tag="market")
async def assets(request: Request) -> HTTPResponse:
    items = []
    for symbol in request.app.ctx.settings.symbols:
        base, quote = symbol.split("-")
        items.append(
            {
                "symbol": symbol,
                "base": base,
                "quote": quote,
                "name": NAMES.get(base, base),
                "price_precision": 8,
                "status": "trading",
            }
        )
    return json({"items": items})


@bp.get("/tickers")
@openapi.definition(summary="Tickers of the listed symbols (all when omitted)", tag="market")
@openapi.parameter("symbols", str, description="comma-separated symbols")
@openapi.response(404, description="unknown_symbol")
async def tickers(request: Request) -> HTTPResponse:
    query = parse_query(request, TickersQuery)
    if query.symbols:
        wanted = [_symbol(request, s) for s in query.symbols.split(",") if s.strip()]
    else:
        wanted = list(request.app.ctx.settings.symbols)
    now = _now_ms()
    view = _view(request)
    return json({"items": [view.ticker(symbol, now) for symbol in dict.fromkeys(wanted)]})


@bp.get("/tickers/<symbol>")
@openapi.definition(summary="One ticker", tag="market")
@openapi.response(404, description="unknown_symbol")
async def ticker(request: Request, symbol: str) -> HTTPResponse:
    # The view's cached bytes: no dict copy or JSON rendering per request.
    body = _view(request).ticker_json(_symbol(request, symbol), _now_ms())
    return HTTPResponse(body, content_type="application/json")


@bp.get("/candles/<symbol>")
@openapi.definition(summary="OHLCV candles, oldest first, with the current one", tag="market")
@openapi.parameter("interval", str, description="1m 5m 15m 1h 4h 1d (default 1m)")
@openapi.parameter("start", int, description="open_time from, ms")
@openapi.parameter("end", int, description="open_time until, ms")
@openapi.parameter("limit", int, description="1 to 1000 (default 500)")
@openapi.response(404, description="unknown_symbol")
@openapi.response(422, description="bad interval, start after end, limit out of range")
async def candles(request: Request, symbol: str) -> HTTPResponse:
    symbol = _symbol(request, symbol)
    query = parse_query(request, CandlesQuery)
    rows = CandleRow.filter(symbol=symbol, interval=query.interval)
    if query.start is not None:
        rows = rows.filter(open_time__gte=query.start)
    if query.end is not None:
        rows = rows.filter(open_time__lte=query.end)
    # Plain rows, not model objects: building 500 models took half the request.
    fields = ("open_time", "open", "high", "low", "close", "volume", "trades")
    # From start forwards when a start is given; otherwise the newest ones.
    if query.start is not None:
        stored = await rows.order_by("open_time").limit(query.limit).values_list(*fields)
    else:
        newest = await rows.order_by("-open_time").limit(query.limit).values_list(*fields)
        stored = list(reversed(newest))
    length = INTERVALS[query.interval]
    items: list[dict[str, Any]] = [
        {
            "symbol": symbol,
            "interval": query.interval,
            "open_time": open_time,
            "close_time": open_time + length - 1,
            "open": render_decimal(open_),
            "high": render_decimal(high),
            "low": render_decimal(low),
            "close": render_decimal(close),
            "volume": render_decimal(volume),
            "trades": trades,
            "closed": True,
        }
        for open_time, open_, high, low, close, volume, trades in stored
    ]
    current = _view(request).current_candle(symbol, query.interval)
    fresh = current is not None and (not items or items[-1]["open_time"] < current["open_time"])
    if current is not None and fresh and _within(current["open_time"], query.start, query.end):
        items.append(current)
        if len(items) > query.limit:
            items = items[-query.limit :] if query.start is None else items[: query.limit]
    return json({"items": items})


@bp.get("/summary")
@openapi.definition(summary="Gainers, losers and volume leaders (cached)", tag="market")
async def summary(request: Request) -> HTTPResponse:
    now = _now_ms()
    cache: dict[str, Any] = request.app.ctx.__dict__.setdefault("summary_cache", {})
    if cache and now < cache["until"]:
        return HTTPResponse(cache["body"], content_type="application/json")
    view = _view(request)
    live = [t for t in (view.ticker(s, now) for s in view.symbols) if t["price"] is not None]

    def by(key: str) -> list[dict[str, Any]]:
        return sorted(live, key=lambda t: float(t[key]), reverse=True)

    body = orjson.dumps(
        {
            "gainers": by("change_pct_24h")[:5],
            "losers": list(reversed(by("change_pct_24h")))[:5],
            "volume_leaders": by("quote_volume_24h")[:5],
            "generated_at": now,
        }
    )
    cache.update(body=body, until=now + int(SUMMARY_TTL_S * 1000))
    return HTTPResponse(body, content_type="application/json")


def _within(open_time: int, start: int | None, end: int | None) -> bool:
    return (start is None or open_time >= start) and (end is None or open_time <= end)
