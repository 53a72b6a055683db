"""Rows of the accounts and alerts tables as the services leave them, for tests that call
the evaluator and the dispatcher in-process."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from models.accounts import User
from models.alerts import Notification, OutboxItem
from tests.support.accounts import new_email


async def new_user(webhook_url: str | None = None, webhook_secret: str | None = None) -> User:
    return await User.create(
        email=new_email(), password_hash="-", webhook_url=webhook_url, webhook_secret=webhook_secret
    )


async def owed(
    user: User,
    kind: str,
    *,
    age: timedelta = timedelta(0),
    due_in: timedelta = timedelta(0),
    attempts: int = 0,
    title: str = "BTC-USD above 100",
) -> OutboxItem:
    """A notification and one delivery of it still owed (``publish`` or ``webhook``), as a
    firing leaves them; ``age`` ago, due ``due_in`` from now, after ``attempts`` tries."""
    now = datetime.now(UTC)
    notification = await Notification.create(
        id=uuid.uuid4(),
        user=user,
        kind="price_alert",
        title=title,
        body="BTC-USD traded at 100, above your alert at 100.",
        data={"symbol": "BTC-USD", "price": "100"},
        created_at=now - age,
    )
    return await OutboxItem.create(
        id=uuid.uuid4(),
        kind=kind,
        notification=notification,
        user=user,
        created_at=now - age,
        due_at=now + due_in,
        attempts=attempts,
    )
