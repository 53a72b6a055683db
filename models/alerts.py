"""Price alerts and what their firing leaves behind: notifications, the outbox, deliveries.

Firing is durable first: one transaction changes the alert, adds the notification and its
outbox rows; the outbox is then worked off (published to the user's WebSocket channel,
POSTed to the user's webhook) and a row is marked done only once that has happened, so a
crash in between delays a delivery but never loses it.
"""

from __future__ import annotations

import uuid

from tortoise import fields
from tortoise.models import Model

from models.accounts import User


class Alert(Model):
    # The integer key doubles as the creation order the engine fires ties in; clients see
    # the UUID.
    seq = fields.BigIntField(primary_key=True)
    id = fields.UUIDField(unique=True, default=uuid.uuid4)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="alerts", on_delete=fields.CASCADE
    )
    symbol = fields.CharField(max_length=21)
    condition = fields.CharField(max_length=10)  # above | below | pct_change
    threshold = fields.DecimalField(max_digits=30, decimal_places=12)
    window_s = fields.IntField(null=True)
    repeat = fields.BooleanField(default=False)
    cooldown_s = fields.IntField(default=300)
    note = fields.CharField(max_length=200, default="")
    status = fields.CharField(max_length=10, default="active")  # active | disabled | triggered
    trigger_count = fields.IntField(default=0)
    last_triggered_at = fields.DatetimeField(null=True)
    # The engine's state, so a new leader resumes a repeating alert where the last one was.
    last_fired_ts = fields.BigIntField(null=True)  # market time (ms) of the last firing
    crossed_back = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "alerts"
        indexes = (("user_id", "status"), ("status",))


class Notification(Model):
    id = fields.UUIDField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="notifications", on_delete=fields.CASCADE
    )
    kind = fields.CharField(max_length=32)
    title = fields.CharField(max_length=200)
    body = fields.CharField(max_length=1000)
    data: fields.Field[dict[str, object]] = fields.JSONField(default=dict)
    created_at = fields.DatetimeField()
    read_at = fields.DatetimeField(null=True)

    class Meta:
        table = "notifications"
        indexes = (("user_id", "created_at"), ("user_id", "read_at"))


class OutboxItem(Model):
    """One delivery still owed: ``publish`` (the user's socket channel) or ``webhook``.

    The id is the delivery id a webhook receiver sees (``X-CoinLink-Delivery``), the same on
    every attempt, so a receiver can drop repeats.
    """

    id = fields.UUIDField(primary_key=True)
    kind = fields.CharField(max_length=10)  # publish | webhook
    notification: fields.ForeignKeyRelation[Notification] = fields.ForeignKeyField(
        "models.Notification", related_name="outbox", on_delete=fields.CASCADE
    )
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="outbox", on_delete=fields.CASCADE
    )
    created_at = fields.DatetimeField()
    due_at = fields.DatetimeField()
    attempts = fields.IntField(default=0)
    done_at = fields.DatetimeField(null=True)
    failed_at = fields.DatetimeField(null=True)  # given up (attempts or age exhausted)
    last_error = fields.CharField(max_length=200, default="")

    class Meta:
        table = "outbox"
        indexes = (("done_at", "failed_at", "kind", "due_at"),)


class WebhookAttempt(Model):
    """One POST to a user's webhook (the delivery log)."""

    id = fields.BigIntField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="webhook_attempts", on_delete=fields.CASCADE
    )
    delivery_id = fields.UUIDField()
    notification_id = fields.UUIDField()
    attempt = fields.IntField()
    url = fields.CharField(max_length=2048)
    status_code = fields.IntField(null=True)
    ok = fields.BooleanField()
    error = fields.CharField(max_length=200, default="")
    duration_ms = fields.IntField()
    created_at = fields.DatetimeField()

    class Meta:
        table = "webhook_attempts"
        indexes = (("user_id", "id"),)
