"""A user's notifications (newest first) and webhook delivery log, as the REST API reads them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from tortoise.expressions import Q

from coinlink.accounts.user_views import user_changed
from coinlink.bus import Bus
from coinlink.wire import iso_time
from models.alerts import Notification, WebhookAttempt


def notification_dict(notification: Notification) -> dict[str, Any]:
    return {
        "id": str(notification.id),
        "kind": notification.kind,
        "title": notification.title,
        "body": notification.body,
        "data": notification.data,
        "created_at": iso_time(notification.created_at),
        "read_at": iso_time(notification.read_at),
    }


def attempt_dict(attempt: WebhookAttempt) -> dict[str, Any]:
    return {
        "delivery_id": str(attempt.delivery_id),
        "notification_id": str(attempt.notification_id),
        "attempt": attempt.attempt,
        "url": attempt.url,
        "ok": attempt.ok,
        "status_code": attempt.status_code,
        "error": attempt.error or None,
        "duration_ms": attempt.duration_ms,
        "created_at": iso_time(attempt.created_at),
    }


async def listed(
    user_id: str, unread: bool, limit: int, after: tuple[datetime, UUID] | None
) -> list[Notification]:
    """Newest first (ties by id), ``limit + 1`` rows, strictly after the cursor's key."""
    query = Notification.filter(user_id=user_id)
    if unread:
        query = query.filter(read_at__isnull=True)
    if after is not None:
        moment, last_id = after
        query = query.filter(Q(created_at__lt=moment) | Q(created_at=moment, id__lt=last_id))
    return await query.order_by("-created_at", "-id").limit(limit + 1)


async def unread_count(user_id: str) -> int:
    return await Notification.filter(user_id=user_id, read_at__isnull=True).count()


class NotificationNotFound(Exception):
    def __init__(self) -> None:
        super().__init__("no such notification")


async def mark_read(bus: Bus, user_id: str, raw_id: str) -> Notification:
    """Mark one of the user's notifications read (another user's is as unknown as none)."""
    try:
        notification_id = UUID(raw_id)
    except ValueError:
        raise NotificationNotFound from None
    notification = await Notification.get_or_none(id=notification_id, user_id=user_id)
    if notification is None:
        raise NotificationNotFound
    if notification.read_at is None:
        notification.read_at = datetime.now(UTC)
        await notification.save(update_fields=["read_at"])
        await user_changed(bus, user_id)
    return notification


async def mark_all_read(bus: Bus, user_id: str) -> int:
    updated: int = await Notification.filter(user_id=user_id, read_at__isnull=True).update(
        read_at=datetime.now(UTC)
    )
    if updated:
        await user_changed(bus, user_id)
    return updated


async def attempts(user_id: str, limit: int, before_id: int | None) -> list[WebhookAttempt]:
    query = WebhookAttempt.filter(user_id=user_id)
    if before_id is not None:
        query = query.filter(id__lt=before_id)
    return await query.order_by("-id").limit(limit + 1)
