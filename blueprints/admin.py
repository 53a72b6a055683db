"""/api/v2/admin: operator actions, for admin users only."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from sanic import Blueprint, HTTPResponse, Request, json

from coinlink.http.contract import Reply, operation
from coinlink.http.request import Body
from coinlink.http.schemas import Reply as Model
from coinlink.market.service import MarketService

bp = Blueprint("admin", url_prefix="/api/v2/admin")


class TickIn(Body):
    symbol: str = Field(max_length=21)
    price: Decimal = Field(gt=0, lt=Decimal(10) ** 17, allow_inf_nan=False, max_digits=30)
    volume: Decimal = Field(
        default=Decimal(0), ge=0, lt=Decimal(10) ** 25, allow_inf_nan=False, max_digits=38
    )
    ts: int | None = Field(
        default=None,
        ge=0,
        le=10**14,
        description="epoch ms; now when omitted",
        json_schema_extra={"format": "int64"},
    )


class Accepted(Model):
    accepted: bool = Field(description="false: the tick validator dropped it (see the logs)")


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
    market.ensure_admin_ticks()
    tick = body
    accepted = await market.inject_tick(tick.symbol, tick.price, tick.volume, tick.ts)
    return json({"accepted": accepted}, status=202)
