"""Two instances of two workers each on PostgreSQL through PgBouncer in transaction mode.

Debian's PgBouncer hands each transaction whichever of its two server sessions is free, so
the four workers' pools share them: nothing may rely on a session lasting across
transactions (asyncpg's named prepared statements, a session advisory lock). The instances
migrate through it at start, then serve the accounts flow (register, login, refresh
rotation, reuse detection, logout) and the alerts flow (set, fired by admin ticks, one
notification pushed to both instances' sockets and listed) across both; no error-level
line in any log, PgBouncer's included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.integration.test_alerts_processes import (
    call,
    create_alert,
    env_for,
    listening,
    next_notification,
    notifications,
    tick,
)
from tests.support.accounts import PASSWORD, admin_headers, bearer, new_email, signed_up
from tests.support.apps import ServerProcess, alerts_loaded, start_pair
from tests.support.pgbouncer import PgBouncer, pgbouncer_in_front_of
from tests.support.services import eventually

pytestmark = pytest.mark.timeout(240)
SERVER_SESSIONS = 2  # fewer than the workers: they must share


@pytest.fixture
def bouncer(pg_server_url: str) -> Iterator[PgBouncer]:
    with pgbouncer_in_front_of(pg_server_url, pool_size=SERVER_SESSIONS) as running:
        yield running


@pytest.fixture
def pair(fresh_pg_url: str, redis_url: str, bouncer: PgBouncer) -> Iterator[list[ServerProcess]]:
    env = env_for(bouncer.url(fresh_pg_url), redis_url, database_pool_mode="transaction")
    servers = start_pair(env)  # the first migrates through PgBouncer
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


async def server_sessions(database_url: str) -> int:
    """Sessions open on the database, as PostgreSQL itself counts them."""
    conn = await asyncpg.connect("postgresql://" + database_url.split("://", 1)[1])
    try:
        name = database_url.rsplit("/", 1)[1]
        count = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        return int(count)
    finally:
        await conn.close()


async def post(server: ServerProcess, path: str, **kwargs: Any) -> httpx.Response:
    return await call("POST", server.base_url + path, **kwargs)


async def me(server: ServerProcess, tokens: dict[str, Any]) -> int:
    response = await call("GET", server.base_url + "/api/v2/users/me", headers=bearer(tokens))
    return response.status_code


async def test_accounts_and_alerts_flow_across_two_instances_through_pgbouncer(
    pair: list[ServerProcess], fresh_pg_url: str
) -> None:
    first, second = pair
    # Accounts: registered on one instance, signed in on the other.
    email = new_email()
    credentials = {"email": email, "password": PASSWORD}
    registered = await post(first, "/api/v2/auth/register", json=credentials)
    assert registered.status_code == 201, registered.text
    login = await post(second, "/api/v2/auth/login", json=credentials)
    assert login.status_code == 200, login.text
    tokens = login.json()["tokens"]
    # Refresh rotation: each refresh token works once, on whichever instance.
    rotated = await post(
        first, "/api/v2/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert rotated.status_code == 200, rotated.text
    fresh = rotated.json()["tokens"]
    assert fresh["refresh_token"] != tokens["refresh_token"]
    assert await me(second, fresh) == 200
    # Reuse of the spent token revokes the session: its newest tokens die with it.
    reused = await post(
        second, "/api/v2/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert reused.status_code == 401 and reused.json()["error"]["code"] == "token_reused"
    assert await me(first, fresh) == 401
    # Logout on one instance is seen by the other.
    again = await post(first, "/api/v2/auth/login", json=credentials)
    session = again.json()["tokens"]
    logout = await post(second, "/api/v2/auth/logout", headers=bearer(session))
    assert logout.status_code == 204, logout.text
    assert [await me(server, session) for server in pair] == [401, 401]

    # Alerts: set on one instance, the price moved through the other, fired once.
    admin = await asyncio.to_thread(admin_headers, first, fresh_pg_url)
    owner = await signed_up(first.base_url)
    await tick(second, admin, "100")
    alert_id = await create_alert(first, owner, "above", "105")
    marker_id = await create_alert(first, owner, "below", "98")  # fired last: nothing after
    sockets = [await listening(server, owner) for server in pair]
    await eventually(lambda: alerts_loaded(pair) == 2, 30, "both alerts in the leader's engine")
    await tick(second, admin, "105")  # fires
    await tick(first, admin, "106")  # a one-shot alert fires once
    await tick(first, admin, "97")  # the marker
    for client in sockets:
        pushed = await next_notification(client)
        assert pushed["data"]["data"]["alert_id"] == alert_id
        marker = await next_notification(client)
        assert marker["data"]["data"]["alert_id"] == marker_id
        assert marker["seq"] == pushed["seq"] + 1
        await client.close()
    listed = await notifications(second, owner)
    assert [n["data"]["alert_id"] for n in listed] == [marker_id, alert_id]

    # Four workers, two server sessions: PgBouncer shared them.
    assert await server_sessions(fresh_pg_url) <= SERVER_SESSIONS
