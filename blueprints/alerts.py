"""/api/v2/alerts: the caller's price alerts."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

import orjson
from pydantic import (
    AfterValidator,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    StringConstraints,
    field_validator,
    model_validator,
)
from sanic import Blueprint, HTTPResponse, Request, empty, json

from coinlink.alerts.engine import PCT_WINDOWS
from coinlink.alerts.service import MAX_COOLDOWN_S, AlertService, check_window
from coinlink.alerts.store import alert_dict
from coinlink.http.auth import cached_page_for_caller
from coinlink.http.contract import Reply, operation
from coinlink.http.pagination import PageQuery, decode_cursor, page
from coinlink.http.request import Body
from coinlink.http.schemas import (
    Count,
    DecimalString,
    DecimalText,
    Page,
    decimal_pattern,
    unchanged,
)
from coinlink.http.schemas import Reply as Model
from coinlink.market.types import served_spelling

bp = Blueprint("alerts", url_prefix="/api/v2/alerts")

# At most 28 significant digits: the precision of Python's decimal arithmetic.
PRICE_PATTERN = decimal_pattern(16, 12, positive=True)
PERCENT_PATTERN = rf"^(?:1000(?:\.0{{1,12}})?|{decimal_pattern(3, 12, positive=True)[1:-1]})$"
Threshold = Annotated[
    Decimal,
    DecimalText(PRICE_PATTERN, 'above 0 and below 10^16, at most 12 decimals, e.g. "70000.5"'),
]
Percent = Annotated[
    Decimal,
    DecimalText(PERCENT_PATTERN, 'a percentage above 0, up to 1000, e.g. "2.5"'),
]
Cooldown = Annotated[int, Field(ge=0, le=MAX_COOLDOWN_S)]
Condition = Literal["above", "below", "pct_change"]
Status = Literal["active", "disabled", "triggered"]
Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
Symbol = Annotated[str, StringConstraints(max_length=21), AfterValidator(served_spelling)]


class _NewAlert(Body):
    symbol: Symbol
    repeat: bool = False
    cooldown_s: Cooldown = 300
    note: Note = ""


class LevelAlertIn(_NewAlert):
    """Fires on a tick at or above (below) the threshold price."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"symbol": "BTC-USD", "condition": "above", "threshold": "70000"}]
        }
    )

    condition: Literal["above", "below"]
    threshold: Threshold
    window_s: None = Field(default=None, description="pct_change alerts only")

    @field_validator("window_s", mode="before")
    @classmethod
    def _no_window(cls, value: object) -> object:
        if value is not None:
            raise ValueError("window_s applies to pct_change alerts only")
        return value


class PctChangeAlertIn(_NewAlert):
    """Fires when the price moves by the threshold percentage within ``window_s``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"symbol": "ETH-USD", "condition": "pct_change", "threshold": "5", "window_s": 3600}
            ]
        }
    )

    condition: Literal["pct_change"]
    threshold: Percent
    window_s: int = Field(json_schema_extra={"enum": list(PCT_WINDOWS)})

    @model_validator(mode="after")
    def _window(self) -> PctChangeAlertIn:
        check_window(self.condition, self.window_s, self.threshold)
        return self


class AlertIn(
    RootModel[
        Annotated[
            LevelAlertIn | PctChangeAlertIn,
            Discriminator("condition"),
        ]
    ]
):
    """A new alert, by its ``condition``."""


class AlertChange(Body):
    """The fields to change; null is refused (the schema omits it)."""

    # Not Optional: null is the model's own error, naming the field plainly (a union's
    # errors would carry its members' tags: `repeat.bool`, `repeat.none`).
    threshold: Threshold = unchanged()
    repeat: bool = unchanged()
    cooldown_s: Cooldown = unchanged()
    note: Note = unchanged()
    status: Literal["active", "disabled"] = unchanged()


class AlertsQuery(PageQuery):
    status: Status | None = None


class Alert(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0b9f3c56-3a43-4c8e-9d0e-8f7f2a1b6c01",
                    "symbol": "BTC-USD",
                    "condition": "above",
                    "threshold": "70000",
                    "window_s": None,
                    "repeat": False,
                    "cooldown_s": 300,
                    "note": "",
                    "status": "active",
                    "trigger_count": 0,
                    "last_triggered_at": None,
                    "created_at": "2026-12-06T09:30:00.000Z",
                }
            ]
        }
    )
    id: UUID
    symbol: str
    condition: Condition
    threshold: DecimalString
    window_s: int | None
    repeat: bool
    cooldown_s: Count
    note: str
    status: Status
    trigger_count: Count
    last_triggered_at: datetime | None
    created_at: datetime


NOT_FOUND = {404: "`not_found`: no such alert of the caller's"}
THE_ALERT = Reply("the alert", Alert)


def _alerts(request: Request) -> AlertService:
    alerts: AlertService = request.app.ctx.alerts
    return alerts


_ALERT_ID = {"alert_id": "$response.body#/id"}


@bp.post("")
@operation(
    summary="Create a price alert",
    tag="alerts",
    auth="bearer",
    body=AlertIn,
    replies={
        201: Reply(
            "the alert",
            Alert,
            links={
                "GetAlert": ("get_alert", _ALERT_ID),
                "PatchAlert": ("patch_alert", _ALERT_ID),
                "DeleteAlert": ("delete_alert", _ALERT_ID),
            },
        )
    },
    errors={
        404: "`unknown_symbol`: the symbol is not served here",
        409: "`alert_limit_reached`: `details.cap` alerts already (COINLINK_ALERTS_MAX_PER_USER)",
    },
)
async def create_alert(request: Request, body: AlertIn) -> HTTPResponse:
    alert = await _alerts(request).create(request.ctx.claims.user_id, body.root.model_dump())
    return json(alert_dict(alert), status=201)


@bp.get("")
@operation(
    summary="The caller's alerts, newest first",
    tag="alerts",
    auth="bearer",
    query=AlertsQuery,
    replies={200: Reply("one page", Page[Alert])},
)
async def list_alerts(request: Request, query: AlertsQuery) -> HTTPResponse:
    before = decode_cursor(query.cursor, int)[0] if query.cursor else None
    user_id = request.ctx.claims.user_id

    async def render() -> bytes:
        rows = await _alerts(request).listed(user_id, query.status, query.limit, before)
        return orjson.dumps(page(rows, query.limit, lambda a: [a.seq], alert_dict))

    return await cached_page_for_caller(request, query, ("alerts", query.status), render)


@bp.get("/<alert_id:str>")
@operation(
    summary="One of the caller's alerts",
    tag="alerts",
    auth="bearer",
    replies={200: THE_ALERT},
    errors=NOT_FOUND,
)
async def get_alert(request: Request, alert_id: str) -> HTTPResponse:
    return json(alert_dict(await _alerts(request).get(request.ctx.claims.user_id, alert_id)))


@bp.patch("/<alert_id:str>")
@operation(
    summary="Change an alert (threshold, repeat, cooldown, note, active or disabled)",
    tag="alerts",
    auth="bearer",
    body=AlertChange,
    replies={200: THE_ALERT},
    errors=NOT_FOUND,
)
async def patch_alert(request: Request, alert_id: str, body: AlertChange) -> HTTPResponse:
    changes = body.model_dump(exclude_unset=True)
    alert = await _alerts(request).change(request.ctx.claims.user_id, alert_id, changes)
    return json(alert_dict(alert))


@bp.delete("/<alert_id:str>")
@operation(
    summary="Delete an alert",
    tag="alerts",
    auth="bearer",
    replies={204: Reply("deleted")},
    errors=NOT_FOUND,
)
async def delete_alert(request: Request, alert_id: str) -> HTTPResponse:
    await _alerts(request).delete(request.ctx.claims.user_id, alert_id)
    return empty()
