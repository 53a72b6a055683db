"""Two real instances share PostgreSQL and Redis: one ingests; kill -9 it, the other leads.

Ticks go in through the admin API (the providers' path) with explicit timestamps, so the
test decides which minutes close; the database must end up with every closed 1-minute
candle exactly once, built from every tick, across the take-over.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis

from coinlink import channels
from tests.support.accounts import admin_headers
from tests.support.apps import ServerProcess, instance_env, leads
from tests.support.leases import holder, lease
from tests.support.services import wait_for

LEASE_S = 2.0
MINUTE = 60_000
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def env(fresh_pg_url: str, redis_url: str) -> dict[str, str]:
    return instance_env(
        fresh_pg_url,
        redis_url,
        admin_ticks="true",
        ingest_lease_s=str(LEASE_S),
        ingest_max_tick_age_s="3600",
        symbols="BTC-USD,ETH-USD",
    )


@pytest.fixture
def instances(env: dict[str, str]) -> Iterator[list[ServerProcess]]:
    first = ServerProcess(env).wait_ready()  # migrates before the second one starts
    servers = [first, ServerProcess(env).wait_ready()]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def inject(server: ServerProcess, headers: dict[str, str], price: str, ts: int) -> None:
    response = httpx.post(
        server.base_url + "/api/v2/admin/ticks",
        headers=headers,
        json={"symbol": "BTC-USD", "price": price, "volume": "1", "ts": ts},
    )
    assert response.status_code == 202, response.text


def stored(database_url: str) -> list[tuple[Any, ...]]:
    async def fetch() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect("postgresql://" + database_url.split("://", 1)[1])
        try:
            rows = await conn.fetch(
                "SELECT open_time, open, high, low, close, volume, trades FROM candles"
                " WHERE symbol = 'BTC-USD' AND interval = '1m' ORDER BY open_time"
            )
        finally:
            await conn.close()
        return [tuple(row) for row in rows]

    return asyncio.run(fetch())


def heartbeat_of(redis_url: str, env: dict[str, str]) -> str | None:
    """The holder named by the ingest heartbeat in Redis (the admin tick API answers 503
    while there is none)."""
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.get(f"{env['COINLINK_REDIS_PREFIX']}kv:{channels.INGEST_HEARTBEAT_KEY}")
    finally:
        client.close()
    return None if raw is None else str(orjson.loads(raw)["holder"])


def test_only_one_instance_ingests_and_the_other_takes_over_after_kill_9(
    instances: list[ServerProcess], env: dict[str, str], redis_url: str, fresh_pg_url: str
) -> None:
    wait_for(lambda: sum(leads(s) for s in instances) == 1, 30, "one leader")
    # Still exactly one a while later: the grant it holds now runs out (on Redis's clock)
    # while its holder renews it and the other instance keeps trying to take it.
    held, left_ms, now_ms = lease(redis_url, env)
    assert held is not None
    first_grant_ends = now_ms + left_ms

    def renewed_past_the_first_grant() -> bool:
        assert sum(leads(s) for s in instances) == 1
        value, _, now_ms = lease(redis_url, env)
        assert value == held  # the same token and holder throughout
        return now_ms > first_grant_ends

    wait_for(renewed_past_the_first_grant, 30, "the leader to renew past its first grant")
    leader = next(s for s in instances if leads(s))
    follower = next(s for s in instances if s is not leader)
    wait_for(lambda: heartbeat_of(redis_url, env) == holder(held), 30, "the leader's heartbeat")
    # The follower's API accepts ticks too: they travel over the bus to the leader.
    headers = admin_headers(follower, fresh_pg_url)

    base = (time.time_ns() // 1_000_000 // MINUTE - 30) * MINUTE
    # Minutes 0-3, two ticks each; minute 4 gets its first tick before the kill.
    for minute in range(4):
        inject(follower, headers, f"{100 + minute}", base + minute * MINUTE + 1_000)
        inject(follower, headers, f"{100 + minute}.5", base + minute * MINUTE + 2_000)
    inject(follower, headers, "104", base + 4 * MINUTE + 1_000)
    # Minute 3 closed by the tick of minute 4; candles close by the market's clock, so the
    # old timestamps do not close minute 4 for silence.
    wait_for(lambda: len(stored(fresh_pg_url)) == 4, 30, "four closed candles stored")

    # The new leader resumes minute 4 from the bus history: the old one must have published
    # it (in the batch after its tick), which the follower's own view shows once it has.
    def minute_4_published() -> bool:
        response = httpx.get(
            follower.base_url + "/api/v2/market/candles/BTC-USD",
            params={"interval": "1m", "start": base + 4 * MINUTE},
        )
        return [(c["open_time"], c["closed"]) for c in response.json()["items"]] == [
            (base + 4 * MINUTE, False)
        ]

    wait_for(minute_4_published, 30, "minute 4's open candle on the bus")

    old_lease, _, _ = lease(redis_url, env)
    os.killpg(leader.process.pid, signal.SIGKILL)
    leader.process.wait(10)
    # Within a lease period (as the grant runs out) on an idle machine; the deadline allows
    # for a loaded one.
    wait_for(lambda: leads(follower), 30, "take-over")
    new_lease, _, _ = lease(redis_url, env)
    assert old_lease is not None and new_lease is not None
    # The dead leader's heartbeat may run out before the new one's first: wait for that.
    wait_for(lambda: heartbeat_of(redis_url, env) == holder(new_lease), 30, "the new heartbeat")
    # A new grant (the old one ran out), not the old one carried on: a larger fencing token.
    assert int(new_lease.split(b":")[0]) > int(old_lease.split(b":")[0])

    # The rest of minute 4, then minute 5 closes it.
    inject(follower, headers, "104.5", base + 4 * MINUTE + 2_000)
    inject(follower, headers, "105", base + 5 * MINUTE + 1_000)
    wait_for(lambda: len(stored(fresh_pg_url)) == 5, 30, "minute 4 stored")

    rows = stored(fresh_pg_url)
    assert [row[0] for row in rows] == [base + m * MINUTE for m in range(5)]  # none twice
    assert [row[6] for row in rows[:4]] == [2, 2, 2, 2]
    minute_4 = rows[4]
    # Built from both leaders' ticks: the first tick (before the kill) opened it.
    assert (str(minute_4[1]).rstrip("0").rstrip("."), str(minute_4[4]).rstrip("0").rstrip(".")) == (
        "104",
        "104.5",
    )
    assert minute_4[6] == 2  # trades: one tick from each leader

    # The rolling 24 h statistics survived the take-over (rebuilt from stored candles).
    def ticker() -> dict[str, Any]:
        return dict(httpx.get(follower.base_url + "/api/v2/market/tickers/BTC-USD").json())

    wait_for(lambda: ticker()["price"] == "105", 30, "the new leader's ticker")
    stats = ticker()
    assert (stats["open_24h"], stats["low_24h"], stats["high_24h"]) == ("100", "100", "105")
    assert stats["volume_24h"] == "11"  # every tick of both reigns
