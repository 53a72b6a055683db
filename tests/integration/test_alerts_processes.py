"""Alerts end to end on two real instances: admin ticks in, notifications out everywhere.

The alert is set on one instance, the price moved through the other's admin API, the
notification read back over REST and received on a WebSocket of either instance, and
(where the test says) by a local webhook receiver; one test kills the leader with
``kill -9`` between the firing's commit and its publish.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import os
import signal
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest

from tests.support import log_guard, paused_alerts
from tests.support.accounts import admin_headers, signed_up
from tests.support.apps import (
    ServerProcess,
    alerts_loaded,
    ingest_heartbeat,
    instance_env,
    leads,
    start_pair,
)
from tests.support.services import RedisServer, eventually, until
from tests.support.webhook_receiver import Received, Receiver, answer, receiver
from tests.support.ws import WsClient

pytestmark = pytest.mark.timeout(180)
LEASE_S = 2.0


def env_for(pg_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    return instance_env(
        pg_url,
        redis_url,
        admin_ticks="true",
        ingest_lease_s=str(LEASE_S),
        symbols="BTC-USD,ETH-USD",
        webhook_allow_private="true",
        **extra,
    )


@pytest.fixture
def pair(fresh_pg_url: str, redis_url: str) -> Iterator[list[ServerProcess]]:
    servers = start_pair(env_for(fresh_pg_url, redis_url))
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


# The tests are async (sockets and a webhook receiver live on their loop): HTTP goes through
# httpx.AsyncClient, so the loop keeps serving them meanwhile.


async def call(method: str, url: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.request(method, url, **kwargs)


async def tick(
    server: ServerProcess, admin: dict[str, str], price: str, symbol: str = "BTC-USD"
) -> None:
    response = await call(
        "POST",
        server.base_url + "/api/v2/admin/ticks",
        headers=admin,
        json={"symbol": symbol, "price": price, "volume": "1"},
    )
    assert response.status_code == 202, response.text


async def notifications(server: ServerProcess, user: dict[str, Any]) -> list[dict[str, Any]]:
    response = await call("GET", server.base_url + "/api/v2/notifications", headers=user["headers"])
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def create_alert(
    server: ServerProcess,
    user: dict[str, Any],
    condition: str,
    threshold: str,
    symbol: str = "BTC-USD",
) -> str:
    created = await call(
        "POST",
        server.base_url + "/api/v2/alerts",
        headers=user["headers"],
        json={"symbol": symbol, "condition": condition, "threshold": threshold},
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def next_notification(client: WsClient, timeout: float = 30) -> dict[str, Any]:
    return await client.next(
        lambda m: m["type"] == "update" and m["channel"] == "notifications", timeout=timeout
    )


async def alert(server: ServerProcess, user: dict[str, Any], alert_id: str) -> dict[str, Any]:
    response = await call(
        "GET", server.base_url + f"/api/v2/alerts/{alert_id}", headers=user["headers"]
    )
    return dict(response.json())


async def listening(server: ServerProcess, user: dict[str, Any]) -> WsClient:
    client = await WsClient.open(server.base_url)
    await client.request("auth", token=user["tokens"]["access_token"])
    await client.request("subscribe", channels=["notifications"])
    await client.next(lambda m: m["type"] == "snapshot")
    return client


@pytest.fixture
async def hook() -> AsyncIterator[Receiver]:
    """A webhook receiver that answers 200."""
    async with receiver(answer(200)) as rcv:
        yield rcv


async def test_an_alert_set_on_one_instance_fires_once_and_reaches_every_socket(
    pair: list[ServerProcess], fresh_pg_url: str, hook: Receiver
) -> None:
    first, second = pair
    admin = await asyncio.to_thread(admin_headers, first, fresh_pg_url)
    user = await signed_up(first.base_url)
    secret = await webhook_for(second, user, hook.port)
    await tick(second, admin, "100")
    alert_id = await create_alert(first, user, "above", "105")
    # The marker: fired by the last tick, so whatever the first alert caused comes before it.
    marker_id = await create_alert(first, user, "below", "98")
    sockets = [await listening(server, user) for server in pair]
    await eventually(lambda: alerts_loaded(pair) == 2, 30, "both alerts in the leader's engine")

    await tick(second, admin, "5000")  # an absurd jump: dropped by validation, fires nothing
    await tick(second, admin, "104.99")  # not yet
    await tick(second, admin, "105")  # >= threshold: fires
    await tick(first, admin, "106")  # a one-shot alert fires once
    await tick(first, admin, "97")  # the marker fires
    for client in sockets:
        pushed = await next_notification(client)
        assert pushed["data"]["kind"] == "price_alert"
        assert pushed["data"]["data"]["alert_id"] == alert_id
        assert pushed["data"]["data"]["price"] == "105"
        # The very next message of the channel (seq + 1) is the marker: no second firing.
        marker = await next_notification(client)
        assert marker["data"]["data"]["alert_id"] == marker_id
        assert marker["seq"] == pushed["seq"] + 1
    newest_first = await notifications(second, user)
    assert [n["data"]["alert_id"] for n in newest_first] == [marker_id, alert_id]
    stored = newest_first[1]
    assert stored["id"] == pushed["data"]["id"] and stored["read_at"] is None
    assert stored["data"] == {
        "alert_id": alert_id,
        "symbol": "BTC-USD",
        "condition": "above",
        "threshold": "105",
        "price": "105",
        "ts": stored["data"]["ts"],
    }
    fired = await alert(second, user, alert_id)
    assert fired["status"] == "triggered" and fired["trigger_count"] == 1
    for client in sockets:
        await client.close()
    # ...and exactly one signed POST per notification reached the user's webhook.
    await until(lambda: len(hook.requests) >= 2, 30, "both webhook deliveries")
    delivered = {orjson.loads(r.body)["id"]: r for r in hook.requests}
    assert len(hook.requests) == 2 and set(delivered) == {n["id"] for n in newest_first}
    assert_signed(delivered[stored["id"]], secret)
    assert orjson.loads(delivered[stored["id"]].body) == stored


async def webhook_for(server: ServerProcess, user: dict[str, Any], port: int) -> str:
    """Point the user's webhook at a local receiver; the signing secret."""
    prefs = await call(
        "PUT",
        server.base_url + "/api/v2/users/me/preferences",
        headers=user["headers"],
        json={"webhook_url": f"http://127.0.0.1:{port}/hook"},
    )
    assert prefs.status_code == 200, prefs.text
    created = await call(
        "POST", server.base_url + "/api/v2/users/me/webhook-secret", headers=user["headers"]
    )
    return str(created.json()["secret"])


def assert_signed(request: Received, secret: str) -> None:
    stamp = request.headers["x-coinlink-timestamp"]
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + request.body, hashlib.sha256)
    assert request.headers["x-coinlink-signature"] == f"sha256={digest.hexdigest()}"


@pytest.mark.parametrize(
    ("sig", "pause_s"),
    [
        # The new leader's sweep publishes what the dead one committed.
        (signal.SIGKILL, "30"),
        # The stopping leader publishes it (its pause ends within the stop's grace) before
        # it hands over: the new one has nothing left to push.
        (signal.SIGTERM, "3"),
    ],
    ids=["kill-9", "sigterm"],
)
async def test_a_leader_gone_between_commit_and_publish_delivers_once_after_take_over(
    sig: signal.Signals, pause_s: str, fresh_pg_url: str, redis_url: str
) -> None:
    servers = await asyncio.to_thread(
        start_pair,
        # No drain: the hand-over starts with the signal.
        env_for(fresh_pg_url, redis_url, shutdown_drain_s="0") | {paused_alerts.PAUSE_ENV: pause_s},
        paused_alerts.MODULE,
    )
    try:
        leader = next(s for s in servers if leads(s))
        follower = next(s for s in servers if s is not leader)
        admin = await asyncio.to_thread(admin_headers, follower, fresh_pg_url)
        user = await signed_up(follower.base_url)
        await tick(follower, admin, "100")
        alert_id = await create_alert(follower, user, "below", "90")
        marker_id = await create_alert(follower, user, "below", "70")
        client = await listening(follower, user)
        await eventually(
            lambda: alerts_loaded(servers) == 2, 30, "both alerts in the leader's engine"
        )

        await tick(follower, admin, "89.5")
        # Committed (in REST), then the leader sits in its pause before publishing.
        await until(lambda: notifications(follower, user), 30, "the commit")
        if sig == signal.SIGKILL:
            os.killpg(leader.process.pid, sig)
        else:
            leader.process.send_signal(sig)  # to the main process, as a container runtime
        await asyncio.to_thread(leader.process.wait, 20)

        pushed = await next_notification(client, timeout=60)
        [stored] = await notifications(follower, user)
        assert pushed["data"]["id"] == stored["id"]
        # The new leader loaded the alert as triggered: more ticks fire nothing but the marker.
        await eventually(
            lambda: leads(follower) and alerts_loaded([follower]) == 1, 30, "the new leader"
        )
        await tick(follower, admin, "80")
        await tick(follower, admin, "69")
        # The new leader pauses after its commit too: the marker's push comes after it
        # (its own sweep must leave a firing in flight alone, so nothing comes sooner).
        marker = await next_notification(client, timeout=float(pause_s) + 30)
        assert marker["data"]["data"]["alert_id"] == marker_id
        assert marker["seq"] == pushed["seq"] + 1
        assert len(await notifications(follower, user)) == 2
        assert (await alert(follower, user, alert_id))["trigger_count"] == 1
        await client.close()
    finally:
        for server in servers:
            await asyncio.to_thread(server.stop)


async def test_a_webhook_is_retried_with_backoff_until_the_receiver_recovers(
    fresh_pg_url: str, redis_url: str
) -> None:
    answers = iter([503, 503, 200])

    async def flaky(received: Received, writer: asyncio.StreamWriter) -> None:
        await answer(next(answers, 200))(received, writer)

    env = env_for(fresh_pg_url, redis_url, webhook_retry_base_s="0.5")
    server = await asyncio.to_thread(ServerProcess(env).wait_ready)
    try:
        async with receiver(flaky) as hook:
            admin = await asyncio.to_thread(admin_headers, server, fresh_pg_url)
            user = await signed_up(server.base_url)
            secret = await webhook_for(server, user, hook.port)
            await eventually(lambda: leads(server), 30, "a leader")
            await eventually(lambda: ingest_heartbeat(server), 30, "the leader's heartbeat")
            await create_alert(server, user, "above", "10", symbol="ETH-USD")
            await eventually(lambda: alerts_loaded([server]) == 1, 30, "the alert in the engine")
            await tick(server, admin, "11", symbol="ETH-USD")

            async def deliveries() -> list[dict[str, Any]]:
                response = await call(
                    "GET",
                    server.base_url + "/api/v2/notifications/deliveries",
                    headers=user["headers"],
                )
                return list(response.json()["items"])

            async def succeeded() -> bool:
                return any(a["ok"] for a in await deliveries())

            # Done once the log records the success; nothing is retried after that.
            await until(succeeded, 30, "a successful attempt")
            assert len(hook.requests) == 3
            [stored] = await notifications(server, user)
            for request in hook.requests:
                assert request.method == "POST" and request.target == "/hook"
                assert_signed(request, secret)
                assert orjson.loads(request.body) == stored
            # One logical delivery: the same id on every attempt.
            assert len({r.headers["x-coinlink-delivery"] for r in hook.requests}) == 1

            log = await deliveries()
            assert [(a["attempt"], a["ok"], a["status_code"]) for a in log] == [
                (3, True, 200),
                (2, False, 503),
                (1, False, 503),
            ]
            assert {a["delivery_id"] for a in log} == {
                hook.requests[0].headers["x-coinlink-delivery"]
            }
            # The backoff, on the server's own clock (each attempt's start, as logged): an
            # attempt is due at least base/2, then 2 x base/2, after the one that failed.
            # (The receiver's arrival times would add its own loop's delays.)
            started = [datetime.fromisoformat(a["created_at"]) for a in reversed(log)]
            gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(started)]
            assert gaps[0] >= 0.25 - 0.001 and gaps[1] >= 0.5 - 0.001, gaps  # ms stamps
    finally:
        await asyncio.to_thread(server.stop)


@pytest.mark.expected_errors(*log_guard.REDIS_GONE)
async def test_a_firing_caught_by_a_redis_restart_is_delivered_from_the_outbox(
    fresh_pg_url: str,
) -> None:
    """Redis dies after the commit, before the publish; the socket and the
    notification both survive it."""
    redis = await asyncio.to_thread(RedisServer().start)
    # The leader pauses 30 s between a firing's commit and its publish: Redis is stopped
    # inside that pause, whatever the machine's load.
    env = env_for(fresh_pg_url, redis.url) | {paused_alerts.PAUSE_ENV: "30"}
    server = await asyncio.to_thread(ServerProcess(env, module=paused_alerts.MODULE).wait_ready)
    try:
        await eventually(lambda: leads(server), 30, "a leader")
        admin = await asyncio.to_thread(admin_headers, server, fresh_pg_url)
        user = await signed_up(server.base_url)
        await create_alert(server, user, "above", "50")
        client = await listening(server, user)
        await eventually(lambda: alerts_loaded([server]) == 1, 30, "the alert in the engine")
        await eventually(lambda: ingest_heartbeat(server), 30, "the leader's heartbeat")
        await tick(server, admin, "51")
        await until(lambda: notifications(server, user), 30, "the commit")

        await asyncio.to_thread(redis.stop)  # during the pause between commit and publish
        # Down until the leader has noticed: its reign, and the paused publish, end.
        await eventually(lambda: not leads(server), 30, "the leader to step down")
        await asyncio.to_thread(redis.start)

        pushed = await next_notification(client, timeout=60)
        [stored] = await notifications(server, user)
        assert pushed["data"]["id"] == stored["id"]
        assert (await client.request("ping"))["type"] == "pong"  # the same socket
        await client.close()
    finally:
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(redis.stop)
