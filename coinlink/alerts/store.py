"""Alerts as users manage them: create under a per-user cap, read, change, delete.

Every change is announced on the bus channel ``alerts:changes`` (the alert's id), so the
leader's engine re-reads that alert from the database within moments; the database stays
the one source of truth, and an announcement lost while Redis is away is made good when a
leader next loads every alert.
"""

from __future__ import annotations

import contextlib
from typing import Any
from uuid import UUID

import orjson
import structlog
from tortoise.transactions import in_transaction

from coinlink import channels
from coinlink.bus import Bus, BusError
from coinlink.wire import decimal_str, iso_time
from models.accounts import User
from models.alerts import Alert

log = structlog.get_logger(logger_name="coinlink.alerts")


class AlertLimitReached(Exception):
    def __init__(self, cap: int) -> None:
        super().__init__(
            f"at most {cap} alerts per user (the operator's COINLINK_ALERTS_MAX_PER_USER);"
            " delete some first"
        )
        self.cap = cap


def alert_dict(alert: Alert) -> dict[str, Any]:
    return {
        "id": str(alert.id),
        "symbol": alert.symbol,
        "condition": alert.condition,
        "threshold": decimal_str(alert.threshold),
        "window_s": alert.window_s,
        "repeat": alert.repeat,
        "cooldown_s": alert.cooldown_s,
        "note": alert.note,
        "status": alert.status,
        "trigger_count": alert.trigger_count,
        "last_triggered_at": iso_time(alert.last_triggered_at),
        "created_at": iso_time(alert.created_at),
    }


async def announce(bus: Bus, alert_id: UUID) -> None:
    """Best effort: the leader also re-reads every alert when it takes over."""
    with contextlib.suppress(BusError):
        await bus.publish(channels.ALERT_CHANGES, orjson.dumps({"id": str(alert_id)}))


async def create(user_id: str, cap: int, **values: Any) -> Alert:
    """A new active alert; :class:`AlertLimitReached` once the user has ``cap`` of them."""
    async with in_transaction():
        # The user's row is the lock: concurrent creations count one after the other.
        await User.filter(id=user_id).select_for_update().first()
        if await Alert.filter(user_id=user_id).count() >= cap:
            raise AlertLimitReached(cap)
        return await Alert.create(user_id=user_id, **values)


async def of_user(user_id: str, alert_id: UUID) -> Alert | None:
    return await Alert.get_or_none(id=alert_id, user_id=user_id)


async def listed(
    user_id: str, status: str | None, limit: int, before_seq: int | None
) -> list[Alert]:
    """Newest first, ``limit + 1`` rows (the extra says whether there is a next page)."""
    query = Alert.filter(user_id=user_id)
    if status is not None:
        query = query.filter(status=status)
    if before_seq is not None:
        query = query.filter(seq__lt=before_seq)
    return await query.order_by("-seq").limit(limit + 1)


async def update(alert: Alert, changes: dict[str, Any]) -> Alert:
    if (
        changes.get("status") == "active"
        or "threshold" in changes
        or changes.get("repeat") is False
    ):
        # (Re-)activated, moved or made one-shot: it starts armed, its firing history does
        # not carry over (a one-shot alert with a firing on record would not be loaded).
        changes = {**changes, "last_fired_ts": None, "crossed_back": False}
    for name, value in changes.items():
        setattr(alert, name, value)
    await alert.save(update_fields=[*changes, "updated_at"])
    return alert


async def delete(alert: Alert) -> None:
    await alert.delete()
