"""/api/v2/alerts: the caller's price alerts."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, StringConstraints, field_validator, model_validator
from sanic import Blueprint, HTTPResponse, Request, empty, json
from sanic_ext import openapi

from blueprints.market import UnknownSymbol
from coinlink.alerts import store
from coinlink.alerts.engine import PCT_WINDOWS
from coinlink.auth import BEARER, requires_auth
from coinlink.errors import ApiError, NotFound, RequestValidationError
from coinlink.pagination import PageQuery, decode_cursor, page
from coinlink.validation import Body, openapi_body, parse_body, parse_query
from models.alerts import Alert

bp = Blueprint("alerts", url_prefix="/api/v2/alerts")

MAX_PRICE = Decimal(10) ** 17
MAX_PCT = Decimal(1000)
MAX_COOLDOWN_S = 7 * 86_400

Threshold = Annotated[
    Decimal, Field(gt=0, lt=MAX_PRICE, allow_inf_nan=False, max_digits=30, decimal_places=12)
]
Cooldown = Annotated[int, Field(ge=0, le=MAX_COOLDOWN_S)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]


class AlertLimit(ApiError):
    status = 409
    code = "alert_limit_reached"


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


def check_window(condition: str, window_s: int | None, threshold: Decimal | None) -> None:
    if condition == "pct_change":
        if window_s not in PCT_WINDOWS:
            raise ValueError(f"window_s must be one of {', '.join(map(str, PCT_WINDOWS))}")
        if threshold is not None and threshold > MAX_PCT:
            raise ValueError(f"a pct_change threshold is a percentage up to {MAX_PCT}")
    elif window_s is not None:
        raise ValueError("window_s applies to pct_change alerts only")


class AlertChange(Body):
    threshold: Threshold | None = None
    repeat: bool | None = None
    cooldown_s: Cooldown | None = None
    note: Note | None = None
    status: Literal["active", "disabled"] | None = None


class AlertsQuery(PageQuery):
    status: Literal["active", "disabled", "triggered"] | None = None


def _alert_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise NotFound("no such alert") from None


async def _own(request: Request, raw_id: str) -> Alert:
    alert = await store.of_user(request.ctx.claims.user_id, _alert_id(raw_id))
    if alert is None:  # another user's alert is as unknown as a missing one
        raise NotFound("no such alert")
    return alert


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
    settings = request.app.ctx.settings
    if body.symbol not in settings.symbols:
        raise UnknownSymbol(body.symbol)
    try:
        alert = await store.create(
            request.ctx.claims.user_id, settings.alerts_max_per_user, **body.model_dump()
        )
    except store.AlertLimitReached as exc:
        raise AlertLimit(str(exc), details={"cap": exc.cap}) from None
    await store.announce(request.app.ctx.bus, alert.id)
    return json(store.alert_dict(alert), status=201)


@bp.get("")
@openapi.definition(summary="The caller's alerts, newest first", tag="alerts", secured=BEARER)
@requires_auth
async def list_alerts(request: Request) -> HTTPResponse:
    query = parse_query(request, AlertsQuery)
    before = decode_cursor(query.cursor, 1)[0] if query.cursor else None
    if before is not None and not isinstance(before, int):
        raise RequestValidationError({"cursor": "is not a cursor this list gave out"})
    rows = await store.listed(request.ctx.claims.user_id, query.status, query.limit, before)
    return json(page(rows, query.limit, lambda a: [a.seq], store.alert_dict))


@bp.get("/<alert_id:str>")
@openapi.definition(summary="One of the caller's alerts", tag="alerts", secured=BEARER)
@openapi.response(404, description="not_found (also for another user's alert)")
@requires_auth
async def get_alert(request: Request, alert_id: str) -> HTTPResponse:
    return json(store.alert_dict(await _own(request, alert_id)))


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
    alert = await _own(request, alert_id)
    changes = body.model_dump(exclude_unset=True)
    nulls = [name for name, value in changes.items() if value is None]
    if nulls:
        raise RequestValidationError(dict.fromkeys(nulls, "must not be null"))
    try:
        check_window(alert.condition, alert.window_s, changes.get("threshold"))
    except ValueError as exc:
        raise RequestValidationError({"threshold": str(exc)}) from None
    if changes:
        alert = await store.update(alert, changes)
        await store.announce(request.app.ctx.bus, alert.id)
    return json(store.alert_dict(alert))


@bp.delete("/<alert_id:str>")
@openapi.definition(summary="Delete an alert", tag="alerts", secured=BEARER)
@openapi.response(204, description="deleted")
@openapi.response(404, description="not_found (also for another user's alert)")
@requires_auth
async def delete_alert(request: Request, alert_id: str) -> HTTPResponse:
    alert = await _own(request, alert_id)
    await alert.delete()
    await store.announce(request.app.ctx.bus, alert.id)
    return empty()
