"""Review: what one user can make a worker hold in its per-user views (real PostgreSQL,
Redis). Each distinct cursor is a new entry, however alike the pages: the bound is 10,000
entries of up to a 200-item page each, not bytes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sanic import Sanic
from sanic_testing.reusable import ReusableClient

from coinlink.http.pagination import encode_cursor
from models.alerts import Notification
from tests.support.accounts import bearer, register
from tests.support.apps import build_app
from tests.support.services import free_port

PAGE = 200
REQUESTS = 100


@pytest.fixture(scope="module")
def app(module_pg_url: str, redis_url: str) -> Sanic:
    return build_app(module_pg_url, redis_url, provider="none", symbols="BTC-USD")


@pytest.fixture(scope="module")
def client(app: Sanic) -> Iterator[ReusableClient]:
    with ReusableClient(app, port=free_port()) as client:
        yield client


def test_one_user_cannot_make_a_worker_hold_a_page_per_cursor(
    app: Sanic, client: ReusableClient
) -> None:
    alice: dict[str, Any] = register(client)
    now = datetime.now(UTC)

    async def insert() -> None:
        for i in range(PAGE):
            await Notification.create(
                id=uuid.uuid4(),
                user_id=alice["user"]["id"],
                kind="price_alert",
                title=f"BTC-USD above 70000 ({i})",
                body="BTC-USD crossed above 70000: 70012.5",
                data={"alert_id": str(uuid.uuid4()), "symbol": "BTC-USD", "i": i},
                created_at=now - timedelta(seconds=i),
            )

    client._run(insert())
    headers = bearer(alice["tokens"])
    future = (now + timedelta(days=365)).isoformat()
    page_bytes = 0
    for _ in range(REQUESTS):
        # A cursor past the newest: the same first page each time, under a new key.
        cursor = encode_cursor(future, str(uuid.uuid4()))
        _, response = client.get(
            "/api/v2/notifications", headers=headers, params={"limit": PAGE, "cursor": cursor}
        )
        assert response.status == 200 and len(response.json["items"]) == PAGE
        page_bytes = len(response.body)
    views = app.ctx.accounts.views
    held = sum(len(entry[2]) for entry in views._entries.values())
    # One user's identical pages should cost a worker about one page, not one per cursor.
    assert held <= 2 * page_bytes, f"{len(views)} entries, {held} bytes held for one user"


def test_the_first_page_at_the_default_limit_is_kept_and_no_other(
    app: Sanic, client: ReusableClient
) -> None:
    bob: dict[str, Any] = register(client)
    headers = bearer(bob["tokens"])
    views = app.ctx.accounts.views

    def mine() -> int:
        return sum(1 for user_id, _ in views._entries if user_id == bob["user"]["id"])

    cursors = {
        "/api/v2/notifications": encode_cursor(datetime.now(UTC).isoformat(), str(uuid.uuid4())),
        "/api/v2/alerts": encode_cursor(2**40),
    }
    for path, cursor in cursors.items():
        for params in ({"limit": 10}, {"cursor": cursor}):
            _, response = client.get(path, headers=headers, params=params)
            assert response.status == 200, response.body
    assert mine() == 0  # another limit, a later page: read from the database
    for path in ("/api/v2/notifications", "/api/v2/alerts"):
        _, response = client.get(path, headers=headers)
        assert response.status == 200 and response.json["items"] == []
    assert mine() == 2
