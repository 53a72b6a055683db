"""/api/v2/admin: operator actions, for admin users only."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from sanic import Blueprint, HTTPResponse, Request, json
from sanic_ext import openapi

from coinlink.http.auth import BEARER, requires_admin
from coinlink.http.request import Body, openapi_body, parse_body
from coinlink.market.service import MarketService

bp = Blueprint("admin", url_prefix="/api/v2/admin")


class TickIn(Body):
    symbol: str = Field(max_length=21)
    price: Decimal = Field(gt=0, lt=Decimal(10) ** 17, allow_inf_nan=False, max_digits=30)
    volume: Decimal = Field(
        default=Decimal(0), ge=0, lt=Decimal(10) ** 25, allow_inf_nan=False, max_digits=38
    )
    ts: int | None = Field(default=None, ge=0, le=10**14)


@bp.post("/ticks")
@openapi.definition(
    summary="Inject a tick: it takes the providers' path (validation, candles, fan-out)",
    tag="admin",
    body=openapi_body(TickIn),
    secured=BEARER,
)
@openapi.response(202, description="accepted for the pipeline")
@openapi.response(403, description="forbidden: not an admin")
@openapi.response(404, description="disabled (COINLINK_ADMIN_TICKS=false) or unknown_symbol")
@openapi.response(503, description="no ingest leader yet (Retry-After)")
@requires_admin
async def inject_tick(request: Request) -> HTTPResponse:
    market: MarketService = request.app.ctx.market
    market.ensure_admin_ticks()  # "disabled" before anything about the body
    tick = parse_body(request, TickIn)
    accepted = await market.inject_tick(tick.symbol, tick.price, tick.volume, tick.ts)
    return json({"accepted": accepted}, status=202)
