"""/api/v2/notifications: the caller's notifications and webhook deliveries."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sanic import Blueprint, HTTPResponse, Request, json
from sanic_ext import openapi

from coinlink.alerts import notifications
from coinlink.http.auth import BEARER, requires_auth
from coinlink.http.errors import RequestValidationError
from coinlink.http.pagination import PageQuery, decode_cursor, page
from coinlink.http.request import parse_query

bp = Blueprint("notifications", url_prefix="/api/v2/notifications")


class NotificationsQuery(PageQuery):
    unread: bool = False


def _bad_cursor() -> RequestValidationError:
    return RequestValidationError({"cursor": "is not a cursor this list gave out"})


@bp.get("")
@openapi.definition(
    summary="The caller's notifications, newest first", tag="notifications", secured=BEARER
)
@requires_auth
async def list_notifications(request: Request) -> HTTPResponse:
    query = parse_query(request, NotificationsQuery)
    after = None
    if query.cursor:
        moment, last_id = decode_cursor(query.cursor, str, str)
        try:
            after = (datetime.fromisoformat(moment), UUID(last_id))
        except (TypeError, ValueError):
            raise _bad_cursor() from None
    rows = await notifications.listed(request.ctx.claims.user_id, query.unread, query.limit, after)
    return json(
        page(
            rows,
            query.limit,
            lambda n: [n.created_at.isoformat(), str(n.id)],
            notifications.notification_dict,
        )
    )


@bp.get("/unread-count")
@openapi.definition(summary="How many are unread", tag="notifications", secured=BEARER)
@requires_auth
async def unread_count(request: Request) -> HTTPResponse:
    return json({"count": await notifications.unread_count(request.ctx.claims.user_id)})


@bp.post("/<notification_id:str>/read")
@openapi.definition(summary="Mark one as read", tag="notifications", secured=BEARER)
@openapi.response(404, description="not_found (also for another user's notification)")
@requires_auth
async def mark_read(request: Request, notification_id: str) -> HTTPResponse:
    found = await notifications.mark_read(request.ctx.claims.user_id, notification_id)
    return json(notifications.notification_dict(found))


@bp.post("/read-all")
@openapi.definition(summary="Mark all as read", tag="notifications", secured=BEARER)
@requires_auth
async def read_all(request: Request) -> HTTPResponse:
    return json({"updated": await notifications.mark_all_read(request.ctx.claims.user_id)})


@bp.get("/deliveries")
@openapi.definition(
    summary="The caller's webhook delivery attempts, newest first",
    tag="notifications",
    secured=BEARER,
)
@requires_auth
async def deliveries(request: Request) -> HTTPResponse:
    query = parse_query(request, PageQuery)
    before = decode_cursor(query.cursor, int)[0] if query.cursor else None
    rows = await notifications.attempts(request.ctx.claims.user_id, query.limit, before)
    return json(page(rows, query.limit, lambda a: [a.id], notifications.attempt_dict))
