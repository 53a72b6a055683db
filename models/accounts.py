"""Accounts: users with their preferences, sessions, and the refresh tokens of each session.

A session is one sign-in (one device) and one refresh-token family: each refresh spends the
session's current token and issues the next; presenting a spent token revokes the session.
Only hashes of refresh tokens are stored.
"""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class User(Model):
    id = fields.UUIDField(primary_key=True)
    email = fields.CharField(max_length=254, unique=True)
    password_hash = fields.CharField(max_length=100)
    display_name = fields.CharField(max_length=64, default="")
    is_admin = fields.BooleanField(default=False)
    base_currency = fields.CharField(max_length=10, default="USD")
    watchlist: fields.Field[list[str]] = fields.JSONField(default=list)
    webhook_url = fields.CharField(max_length=2048, null=True)
    # HMAC key of the user's webhook signatures; shown once, when (re)generated.
    webhook_secret = fields.CharField(max_length=64, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    sessions: fields.ReverseRelation[Session]

    class Meta:
        table = "users"

    def __str__(self) -> str:
        return self.email


class Session(Model):
    id = fields.UUIDField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="sessions", on_delete=fields.CASCADE
    )
    created_at = fields.DatetimeField(auto_now_add=True)
    last_used_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    revoked_at = fields.DatetimeField(null=True)
    user_agent = fields.CharField(max_length=256, default="")
    ip = fields.CharField(max_length=45, default="")

    refresh_tokens: fields.ReverseRelation[RefreshToken]

    class Meta:
        table = "sessions"
        indexes = (("user_id", "revoked_at"),)


class RefreshToken(Model):
    token_hash = fields.CharField(max_length=64, primary_key=True)
    session: fields.ForeignKeyRelation[Session] = fields.ForeignKeyField(
        "models.Session", related_name="refresh_tokens", on_delete=fields.CASCADE
    )
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField()
    spent_at = fields.DatetimeField(null=True)

    class Meta:
        table = "refresh_tokens"
        # Deleting a session (or its user) looks its tokens up by session.
        indexes = (("session_id",),)
