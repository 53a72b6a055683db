"""/api/v2/notifications: the caller's notifications and webhook deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from pydantic import Field
from sanic import Blueprint, HTTPResponse, Request, json

from coinlink.alerts import notifications
from coinlink.http.auth import cached_page_for_caller
from coinlink.http.contract import Reply, operation
from coinlink.http.errors import RequestValidationError
from coinlink.http.pagination import PageQuery, decode_cursor, page
from coinlink.http.request import QueryBool
from coinlink.http.schemas import Count, Page
from coinlink.http.schemas import Reply as Model

bp = Blueprint("notifications", url_prefix="/api/v2/notifications")


class NotificationsQuery(PageQuery):
    unread: QueryBool = Field(default=False, description="only the unread ones")


class Notification(Model):
    id: UUID
    kind: str = Field(examples=["price_alert"])
    title: str
    body: str
    data: dict[str, Any] = Field(description="per kind; price_alert: alert_id, symbol, price...")
    created_at: datetime
    read_at: datetime | None


class Delivery(Model):
    """One attempt to deliver a notification to the caller's webhook."""

    delivery_id: UUID
    notification_id: UUID
    attempt: int = Field(ge=1)
    url: str
    ok: bool
    status_code: int | None = Field(description="null when no HTTP answer came")
    error: str | None
    duration_ms: Count
    created_at: datetime


class UnreadCount(Model):
    count: Count


class Updated(Model):
    updated: Count = Field(description="how many were marked read")


def _bad_cursor() -> RequestValidationError:
    return RequestValidationError({"cursor": "is not a cursor this list gave out"})


@bp.get("")
@operation(
    summary="The caller's notifications, newest first",
    tag="notifications",
    auth="bearer",
    query=NotificationsQuery,
    replies={200: Reply("one page", Page[Notification])},
)
async def list_notifications(request: Request, query: NotificationsQuery) -> HTTPResponse:
    after = None
    if query.cursor:
        moment, last_id = decode_cursor(query.cursor, str, str)
        try:
            after = (datetime.fromisoformat(moment), UUID(last_id))
        except (TypeError, ValueError):
            raise _bad_cursor() from None
    user_id = request.ctx.claims.user_id

    async def render() -> bytes:
        rows = await notifications.listed(user_id, query.unread, query.limit, after)
        listed = page(
            rows,
            query.limit,
            lambda n: [n.created_at.isoformat(), str(n.id)],
            notifications.notification_dict,
        )
        return orjson.dumps(listed)

    return await cached_page_for_caller(request, query, ("notifications", query.unread), render)


@bp.get("/unread-count")
@operation(
    summary="How many are unread",
    tag="notifications",
    auth="bearer",
    replies={200: Reply("the count", UnreadCount)},
)
async def unread_count(request: Request) -> HTTPResponse:
    return json({"count": await notifications.unread_count(request.ctx.claims.user_id)})


@bp.post("/<notification_id:str>/read")
@operation(
    summary="Mark one as read",
    tag="notifications",
    auth="bearer",
    replies={200: Reply("the notification", Notification)},
    errors={404: "`not_found`: no such notification of the caller's"},
)
async def mark_read(request: Request, notification_id: str) -> HTTPResponse:
    found = await notifications.mark_read(
        request.app.ctx.bus, request.ctx.claims.user_id, notification_id
    )
    return json(notifications.notification_dict(found))


@bp.post("/read-all")
@operation(
    summary="Mark all as read",
    tag="notifications",
    auth="bearer",
    replies={200: Reply("how many changed", Updated)},
)
async def read_all(request: Request) -> HTTPResponse:
    updated = await notifications.mark_all_read(request.app.ctx.bus, request.ctx.claims.user_id)
    return json({"updated": updated})


@bp.get("/deliveries")
@operation(
    summary="The caller's webhook delivery attempts, newest first",
    tag="notifications",
    auth="bearer",
    query=PageQuery,
    replies={200: Reply("one page", Page[Delivery])},
)
async def deliveries(request: Request, query: PageQuery) -> HTTPResponse:
    before = decode_cursor(query.cursor, int)[0] if query.cursor else None
    rows = await notifications.attempts(request.ctx.claims.user_id, query.limit, before)
    return json(page(rows, query.limit, lambda a: [a.id], notifications.attempt_dict))
