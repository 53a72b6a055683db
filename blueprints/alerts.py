"""/api/v2/alerts: the caller's price alerts."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator
from sanic import Blueprint, HTTPResponse, Request, empty, json
from sanic_ext import openapi

from coinlink.alerts.service import MAX_COOLDOWN_S, MAX_PRICE, AlertService, check_window
from coinlink.alerts.store import alert_dict
from coinlink.http.auth import BEARER, requires_auth
from coinlink.http.pagination import PageQuery, decode_cursor, page
from coinlink.http.request import Body, openapi_body, parse_body, parse_query

bp = Blueprint("alerts", url_prefix="/api/v2/alerts")

Threshold = Annotated[
    Decimal, Field(gt=0, lt=MAX_PRICE, allow_inf_nan=False, max_digits=30, decimal_places=12)
]
Cooldown = Annotated[int, Field(ge=0, le=MAX_COOLDOWN_S)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]


class AlertIn(Body):
    symbol: Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True, max_length=21)]
    condition: Literal["above", "below", "pct_change"]
    threshold: Threshold
    window_s: int | None = None
    repeat: bool = False
    cooldown_s: Cooldown = 300
    note: Note = ""

    @field_validator("threshold", mode="before")
    @classmethod
    def _decimal_text(cls, value: object) -> object:
        # Decimal strings as the contract says; a JSON number is accepted too, but never
        # a boolean (which pydantic would read as 1 or 0).
        if isinstance(value, bool):
            raise ValueError("must be a decimal string")
        return value

    @model_validator(mode="after")
    def _window(self) -> AlertIn:
        check_window(self.condition, self.window_s, self.threshold)
        return self


class AlertChange(Body):
    threshold: Threshold | None = None
    repeat: bool | None = None
    cooldown_s: Cooldown | None = None
    note: Note | None = None
    status: Literal["active", "disabled"] | None = None


class AlertsQuery(PageQuery):
    status: Literal["active", "disabled", "triggered"] | None = None


def _alerts(request: Request) -> AlertService:
    alerts: AlertService = request.app.ctx.alerts
    return alerts


@bp.post("")
@openapi.definition(
    summary="Create a price alert", tag="alerts", body=openapi_body(AlertIn), secured=BEARER
)
@openapi.response(201, description="the alert")
@openapi.response(404, description="unknown_symbol")
@openapi.response(409, description="alert_limit_reached")
@requires_auth
async def create(request: Request) -> HTTPResponse:
    body = parse_body(request, AlertIn)
    alert = await _alerts(request).create(request.ctx.claims.user_id, body.model_dump())
    return json(alert_dict(alert), status=201)


@bp.get("")
@openapi.definition(summary="The caller's alerts, newest first", tag="alerts", secured=BEARER)
@requires_auth
async def list_alerts(request: Request) -> HTTPResponse:
    query = parse_query(request, AlertsQuery)
    before = decode_cursor(query.cursor, int)[0] if query.cursor else None
    rows = await _alerts(request).listed(
        request.ctx.claims.user_id, query.status, query.limit, before
    )
    return json(page(rows, query.limit, lambda a: [a.seq], alert_dict))


@bp.get("/<alert_id:str>")
@openapi.definition(summary="One of the caller's alerts", tag="alerts", secured=BEARER)
@openapi.response(404, description="not_found (also for another user's alert)")
@requires_auth
async def get_alert(request: Request, alert_id: str) -> HTTPResponse:
    return json(alert_dict(await _alerts(request).get(request.ctx.claims.user_id, alert_id)))


@bp.patch("/<alert_id:str>")
@openapi.definition(
    summary="Change an alert (threshold, repeat, cooldown, note, active or disabled)",
    tag="alerts",
    body=openapi_body(AlertChange),
    secured=BEARER,
)
@openapi.response(404, description="not_found (also for another user's alert)")
@requires_auth
async def patch_alert(request: Request, alert_id: str) -> HTTPResponse:
    body = parse_body(request, AlertChange)
    changes = body.model_dump(exclude_unset=True)
    alert = await _alerts(request).change(request.ctx.claims.user_id, alert_id, changes)
    return json(alert_dict(alert))


@bp.delete("/<alert_id:str>")
@openapi.definition(summary="Delete an alert", tag="alerts", secured=BEARER)
@openapi.response(204, description="deleted")
@openapi.response(404, description="not_found (also for another user's alert)")
@requires_auth
async def delete_alert(request: Request, alert_id: str) -> HTTPResponse:
    await _alerts(request).delete(request.ctx.claims.user_id, alert_id)
    return empty()
