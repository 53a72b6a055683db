"""/api/v2/admin: operator actions, for admin users only."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field
from sanic import Blueprint, HTTPResponse, Request, json

from coinlink.http.contract import Reply, operation
from coinlink.http.request import Body
from coinlink.http.schemas import (
    DecimalString,
    DecimalText,
    EpochMillis,
    RequestMillis,
    decimal_pattern,
    epoch_ms_parameter,
)
from coinlink.http.schemas import Reply as Model
from coinlink.market.service import MarketService

bp = Blueprint("admin", url_prefix="/api/v2/admin")


class TickIn(Body):
    symbol: str = Field(max_length=21)
    # At most 28 significant digits each: the precision of Python's decimal arithmetic.
    price: Annotated[
        Decimal,
        DecimalText(
            decimal_pattern(17, 11, positive=True),
            "above 0 and below 10^17, at most 11 decimals",
        ),
    ]
    volume: Annotated[
        Decimal,
        DecimalText(decimal_pattern(20, 8, positive=False), "below 10^20, at most 8 decimals"),
    ] = Decimal(0)
    ts: RequestMillis | None = epoch_ms_parameter("epoch ms; now when omitted")


class SentTick(Model):
    symbol: str
    price: DecimalString
    volume: DecimalString
    ts: EpochMillis


class Accepted(Model):
    accepted: SentTick = Field(
        description="the tick as sent to the ingest leader, which validates it like any other"
    )


@bp.post("/ticks")
@operation(
    summary="Inject a tick: it takes the providers' path (validation, candles, fan-out)",
    tag="admin",
    auth="admin",
    body=TickIn,
    replies={202: Reply("handed to the pipeline", Accepted)},
    errors={
        404: "`not_found` (COINLINK_ADMIN_TICKS is off) or `unknown_symbol`",
        503: "`service_unavailable`: no ingest leader yet; retry after `Retry-After` s",
    },
)
async def inject_tick(request: Request, body: TickIn) -> HTTPResponse:
    market: MarketService = request.app.ctx.market
    accepted = await market.inject_tick(body.symbol, body.price, body.volume, body.ts)
    return json({"accepted": accepted}, status=202)
