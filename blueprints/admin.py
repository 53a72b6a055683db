"""/api/v2/admin: operator actions, for admin users only."""

from __future__ import annotations

import time
from decimal import Decimal

import orjson
from pydantic import Field, field_validator
from sanic import Blueprint, HTTPResponse, Request, json
from sanic_ext import openapi

from blueprints.market import UnknownSymbol
from coinlink.auth import BEARER, requires_admin
from coinlink.errors import NotFound, ServiceUnavailable
from coinlink.market.ingest import ADMIN_TICKS_CHANNEL, HEARTBEAT_KEY
from coinlink.validation import Body, openapi_body, parse_body

bp = Blueprint("admin", url_prefix="/api/v2/admin")


class TickIn(Body):
    symbol: str = Field(max_length=21)
    price: Decimal = Field(gt=0, lt=Decimal(10) ** 17, allow_inf_nan=False, max_digits=30)
    volume: Decimal = Field(
        default=Decimal(0), ge=0, lt=Decimal(10) ** 25, allow_inf_nan=False, max_digits=38
    )
    ts: int | None = Field(default=None, ge=0, le=10**14)

    @field_validator("symbol")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.strip().upper()


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
    if not request.app.ctx.settings.admin_ticks:
        raise NotFound("admin tick injection is disabled")
    tick = parse_body(request, TickIn)
    if tick.symbol not in request.app.ctx.settings.symbols:
        raise UnknownSymbol(tick.symbol)
    message = {
        "symbol": tick.symbol,
        "price": str(tick.price),
        "volume": str(tick.volume),
        "ts": tick.ts if tick.ts is not None else time.time_ns() // 1_000_000,
    }
    bus = request.app.ctx.bus
    # Through the bus to whichever worker leads ingest, on any instance; with no leader
    # (starting up, or a take-over under way) nobody listens and the tick would be lost.
    if await bus.get(HEARTBEAT_KEY) is None:
        raise ServiceUnavailable(
            "no ingest leader is running yet; retry shortly", headers={"Retry-After": "1"}
        )
    await bus.publish(ADMIN_TICKS_CHANNEL, orjson.dumps(message))
    return json({"accepted": message}, status=202)
