"""/api/v2/market: assets, tickers, candles and the summary (public)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from sanic import Blueprint, HTTPResponse, Request, json
from sanic_ext import openapi

from coinlink.http.request import Query, parse_query
from coinlink.market.service import MarketService

bp = Blueprint("market", url_prefix="/api/v2/market")


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


def _market(request: Request) -> MarketService:
    market: MarketService = request.app.ctx.market
    return market


def _json(body: bytes) -> HTTPResponse:
    return HTTPResponse(body, content_type="application/json")


@bp.get("/assets")
@openapi.definition(summary="The symbols this instance serves", tag="market")
async def assets(request: Request) -> HTTPResponse:
    return json({"items": _market(request).assets()})


@bp.get("/tickers")
@openapi.definition(summary="Tickers of the listed symbols (all when omitted)", tag="market")
@openapi.parameter("symbols", str, description="comma-separated symbols")
@openapi.response(404, description="unknown_symbol")
async def tickers(request: Request) -> HTTPResponse:
    query = parse_query(request, TickersQuery)
    wanted = [s for s in query.symbols.split(",") if s.strip()] if query.symbols else None
    return json({"items": _market(request).tickers(wanted)})


@bp.get("/tickers/<symbol>")
@openapi.definition(summary="One ticker", tag="market")
@openapi.response(404, description="unknown_symbol")
async def ticker(request: Request, symbol: str) -> HTTPResponse:
    return _json(_market(request).ticker_json(symbol))


@bp.get("/candles/<symbol>")
@openapi.definition(summary="OHLCV candles, oldest first, with the current one", tag="market")
@openapi.parameter("interval", str, description="1m 5m 15m 1h 4h 1d (default 1m)")
@openapi.parameter("start", int, description="open_time from, ms")
@openapi.parameter("end", int, description="open_time until, ms")
@openapi.parameter("limit", int, description="1 to 1000 (default 500)")
@openapi.response(404, description="unknown_symbol")
@openapi.response(422, description="bad interval, start after end, limit out of range")
async def candles(request: Request, symbol: str) -> HTTPResponse:
    market = _market(request)
    symbol = market.symbol(symbol)  # an unknown symbol is a 404 before the query is read
    q = parse_query(request, CandlesQuery)
    return json({"items": await market.candles(symbol, q.interval, q.start, q.end, q.limit)})


@bp.get("/summary")
@openapi.definition(summary="Gainers, losers and volume leaders (cached)", tag="market")
async def summary(request: Request) -> HTTPResponse:
    return _json(_market(request).summary_json())
