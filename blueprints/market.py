"""/api/v2/market: assets, tickers, candles and the summary (public)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import unquote

from pydantic import Field, ValidationInfo, field_validator
from sanic import Blueprint, HTTPResponse, Request, json

from coinlink.http.contract import Reply, operation
from coinlink.http.request import Query
from coinlink.http.schemas import (
    Count,
    DecimalString,
    EpochMillis,
    Items,
    RequestMillis,
    epoch_ms_parameter,
)
from coinlink.http.schemas import Reply as Model
from coinlink.market.service import SUMMARY_SIZE, SUMMARY_TTL_MS, MarketService

bp = Blueprint("market", url_prefix="/api/v2/market")

Interval = Literal["1m", "5m", "15m", "1h", "4h", "1d"]
UNKNOWN_SYMBOL = {404: "`unknown_symbol`: `details.symbol` is not served here"}


class TickersQuery(Query):
    symbols: str | None = Field(
        default=None,
        max_length=2000,
        # Not enforced (any other text is an unknown symbol, a 404): it keeps URLs short.
        pattern=r"^[A-Za-z0-9, -]*$",
        description="comma-separated symbols; all when omitted",
    )


class CandlesQuery(Query):
    interval: Interval = "1m"
    start: RequestMillis | None = epoch_ms_parameter("open_time from, epoch ms")
    end: RequestMillis | None = epoch_ms_parameter("open_time until, epoch ms (not before start)")
    limit: int = Field(default=500, ge=1, le=1000)

    @field_validator("end")
    @classmethod
    def _ordered(cls, end: int | None, info: ValidationInfo) -> int | None:
        start = info.data.get("start")
        if start is not None and end is not None and start > end:
            raise ValueError("end must not be before start")
        return end


class Asset(Model):
    symbol: str = Field(examples=["BTC-USD"])
    base: str
    quote: str
    name: str
    price_precision: Count = Field(
        description="decimals showing the current price with about 5 significant digits "
        "(2 to 8); 8 until the first tick"
    )
    status: Literal["trading"]


class Ticker(Model):
    """Fields are null until the symbol's first tick."""

    symbol: str = Field(examples=["BTC-USD"])
    price: DecimalString | None
    bid: DecimalString | None
    ask: DecimalString | None
    open_24h: DecimalString | None
    high_24h: DecimalString | None
    low_24h: DecimalString | None
    volume_24h: DecimalString | None
    quote_volume_24h: DecimalString | None
    change_24h: DecimalString | None
    change_pct_24h: DecimalString | None
    ts: EpochMillis | None = Field(description="the newest tick's time, epoch ms")
    seq: int = Field(ge=0, json_schema_extra={"format": "int64"})
    stale: bool = Field(description="no tick within COINLINK_STALENESS_S")


class Candle(Model):
    symbol: str
    interval: Interval
    open_time: EpochMillis
    close_time: EpochMillis
    open: DecimalString
    high: DecimalString
    low: DecimalString
    close: DecimalString
    volume: DecimalString
    trades: Count
    closed: bool


class Summary(Model):
    gainers: list[Ticker]
    losers: list[Ticker]
    volume_leaders: list[Ticker]
    generated_at: EpochMillis


def _market(request: Request) -> MarketService:
    market: MarketService = request.app.ctx.market
    return market


def _json(body: bytes) -> HTTPResponse:
    return HTTPResponse(body, content_type="application/json")


@bp.get("/assets")
@operation(
    summary="The symbols this instance serves",
    tag="market",
    replies={200: Reply("the assets", Items[Asset])},
)
async def assets(request: Request) -> HTTPResponse:
    return json({"items": _market(request).assets()})


@bp.get("/tickers")
@operation(
    summary="Tickers of the listed symbols (all when omitted)",
    tag="market",
    query=TickersQuery,
    replies={200: Reply("the tickers, in the order asked", Items[Ticker])},
    errors=UNKNOWN_SYMBOL,
)
async def tickers(request: Request, query: TickersQuery) -> HTTPResponse:
    wanted = [s for s in query.symbols.split(",") if s.strip()] if query.symbols else None
    return json({"items": _market(request).tickers(wanted)})


# Path parameters come percent-encoded: BTC%2DUSD is BTC-USD, and an unknown symbol is
# named as the client meant it. (Sanic's route option `unquote` misses a parameter below
# path segments that other routes created first.)
@bp.get("/tickers/<symbol>")
@operation(
    summary="One ticker",
    tag="market",
    replies={200: Reply("the ticker", Ticker)},
    errors=UNKNOWN_SYMBOL,
)
async def ticker(request: Request, symbol: str) -> HTTPResponse:
    return _json(_market(request).ticker_json(unquote(symbol)))


@bp.get("/candles/<symbol>")
@operation(
    summary="OHLCV candles, oldest first, with the current one",
    tag="market",
    query=CandlesQuery,
    replies={200: Reply("the candles", Items[Candle])},
    errors=UNKNOWN_SYMBOL,
)
async def candles(request: Request, symbol: str, query: CandlesQuery) -> HTTPResponse:
    q = query
    return _json(
        await _market(request).candles_json(unquote(symbol), q.interval, q.start, q.end, q.limit)
    )


@bp.get("/summary")
@operation(
    summary="Gainers, losers and volume leaders (cached)",
    tag="market",
    replies={200: Reply("the summary", Summary)},
    description=f"Computed from the live tickers at most every {SUMMARY_TTL_MS // 1000} s per "
    f"worker (`generated_at` says when). `gainers`: up to {SUMMARY_SIZE} assets up over 24 h, "
    "most first; `losers`: those down, most first; an unchanged asset is in neither.",
)
async def summary(request: Request) -> HTTPResponse:
    return _json(_market(request).summary_json())
