"""A Redis Cluster loses a master (kill -9): the bus, and a real instance, carry on.

Each test's cluster is its own (it loses a node). First the bus alone: a subscription and
a lease on the failed shard. Then a real instance. Ticks go in through the admin API while
two WebSocket clients follow ``ticker:BTC-USD``; the master serving that channel's slot is
killed, its replica takes over, and the stream must resume on the same sockets with every
update numbered one after the other, or an explicit snapshot where the numbering restarts.
An alert whose threshold is crossed after the failover fires exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Iterator
from typing import Any

import pytest
import redis.asyncio as redis

from coinlink.bus import RESUBSCRIBED, BusError, Message, RedisBus
from tests.integration.test_alerts_processes import (
    call,
    create_alert,
    listening,
    next_notification,
    notifications,
)
from tests.support.accounts import admin_headers, signed_up
from tests.support.apps import ServerProcess, alerts_loaded, ingest_heartbeat, instance_env
from tests.support.redis_cluster import (
    Node,
    RedisCluster,
    running_cluster,
    wait_promoted,
    wait_replicated,
)
from tests.support.services import eventually, until
from tests.support.ws import WsClient

pytestmark = pytest.mark.timeout(240)
CHANNEL = "ticker:BTC-USD"


@pytest.fixture
def cluster() -> Iterator[RedisCluster]:
    with running_cluster() as made:  # the test's own: it loses a node
        yield made


async def test_the_bus_follows_a_shard_to_its_promoted_replica(
    cluster: RedisCluster, bus_prefix: str
) -> None:
    bus = RedisBus(cluster.url, prefix=bus_prefix, timeout_s=0.5)
    await bus.start()
    sub = bus.subscription()
    queue: asyncio.Queue[Message] = asyncio.Queue()

    async def pump() -> None:
        async for message in sub:
            queue.put_nowait(message)

    task = asyncio.create_task(pump())
    try:
        # The leases' shard fails; one followed channel lives there, one elsewhere.
        victim = cluster.master_of(bus.keys.fence)
        live = next(f"live{i}" for i in itertools.count() if on_shard(cluster, f"live{i}", victim))
        other = next(
            f"other{i}" for i in itertools.count() if not on_shard(cluster, f"other{i}", victim)
        )
        await sub.subscribe(live, other)
        token = (await bus.acquire_lease("job", "a", 60)).token
        assert token is not None
        await bus.publish(live, b"before")
        assert await queue.get() == Message(live, 1, b"before")
        await asyncio.to_thread(wait_replicated, victim)

        victim.kill()
        await asyncio.to_thread(wait_promoted, cluster, victim)
        # A publish that gets through has shown the bus the new slot map, while the live
        # channel's connection may still wait to reconnect: a channel of that shard
        # subscribed now must join that connection, not open a second one to the node.
        promoted = cluster.master_of("{" + live + "}")
        late = next(
            f"late{i}" for i in itertools.count() if on_shard(cluster, f"late{i}", promoted)
        )
        await until(lambda: succeeds(bus.publish(live, b"after")), 30, "a publish")
        await until(lambda: succeeds(sub.subscribe(late)), 30, "a subscribe")
        # The subscription reconnects on its own schedule: publish until one arrives.
        seen: list[Message] = []
        deadline = time.monotonic() + 30
        while not any(m.channel == live for m in seen) and time.monotonic() < deadline:
            with contextlib.suppress(BusError):  # the client may not know the new master yet
                await bus.publish(live, b"after")
            with contextlib.suppress(TimeoutError):
                seen.append(await asyncio.wait_for(queue.get(), 0.25))
        # First the marker that says "you missed what was published meanwhile", then live,
        # numbered on from what the replica had.
        assert seen[0] == Message(RESUBSCRIBED, 0, b"")
        [resumed] = [m for m in seen if m.channel == live]
        assert resumed.data == b"after" and resumed.seq >= 2
        await bus.publish(other, b"elsewhere")  # the other shard's connection still works
        later = [await queue.get()]
        while later[-1].channel != other:  # after "after"s the loop published once more
            later.append(await asyncio.wait_for(queue.get(), 15))
        assert later[-1] == Message(other, 1, b"elsewhere")
        assert {(m.channel, m.data) for m in later[:-1]} <= {(live, b"after")}
        assert await pubsub_clients(promoted) == 1  # one connection per shard
        await bus.publish(late, b"once")
        await bus.publish(other, b"marker")
        tail = [await asyncio.wait_for(queue.get(), 15)]
        while tail[-1].channel != other:
            tail.append(await asyncio.wait_for(queue.get(), 15))
        assert [m for m in tail if m.channel == late] == [Message(late, 1, b"once")]
        # The lease, replicated before the kill, is still a's, with the same token.
        assert (await bus.acquire_lease("job", "b", 60)).token is None
        assert await bus.renew_lease("job", "a", token, 60) is True
    finally:
        await sub.close()
        await asyncio.wait_for(task, 5)  # ended cleanly: re-raises if the iterator failed
        await bus.close()


async def succeeds(call: Awaitable[object]) -> bool:
    try:
        await call
    except BusError:
        return False
    return True


async def pubsub_clients(node: Node) -> int:
    client = redis.Redis(port=node.port)
    try:
        return len(await client.client_list(_type="pubsub"))
    finally:
        await client.aclose()


def on_shard(cluster: RedisCluster, channel: str, node: Node) -> bool:
    return cluster.master_of("{" + channel + "}") is node


async def tick(server: ServerProcess, admin: dict[str, str], price: str) -> None:
    """Inject a tick, retrying while the cluster cannot take it (a shard is failing over)."""

    async def accepted() -> bool:
        response = await call(
            "POST",
            server.base_url + "/api/v2/admin/ticks",
            headers=admin,
            json={"symbol": "BTC-USD", "price": price, "volume": "1"},
        )
        assert response.status_code in (202, 503), response.text
        return response.status_code == 202

    await until(accepted, 60, f"the tick at {price}")


def price_of(message: dict[str, Any]) -> str:
    return str(message["data"]["price"])


async def following(server: ServerProcess) -> WsClient:
    client = await WsClient.open(server.base_url)
    await client.request("subscribe", channels=[CHANNEL])
    await client.next(lambda m: m["type"] == "snapshot" and m["channel"] == CHANNEL)
    return client


async def stream_until(client: WsClient, price: str) -> list[dict[str, Any]]:
    """The channel's updates and snapshots up to the one carrying ``price``, taken out."""
    last = await client.next(
        lambda m: m.get("channel") == CHANNEL and price_of(m) == price, timeout=60
    )
    earlier = [m for m in client.received if m.get("channel") == CHANNEL]
    client.received = [m for m in client.received if m not in earlier]
    return [*earlier, last]


def contiguous(stream: list[dict[str, Any]]) -> bool:
    """Each update numbered right after the one before; a snapshot may start over."""
    return all(
        b["type"] == "snapshot" or b["seq"] == a["seq"] + 1 for a, b in itertools.pairwise(stream)
    )


async def test_streams_resume_and_an_alert_fires_once_across_a_master_failover(
    cluster: RedisCluster, fresh_pg_url: str
) -> None:
    env = instance_env(
        fresh_pg_url,
        cluster.url,
        admin_ticks="true",
        ingest_lease_s="2",
        symbols="BTC-USD,ETH-USD",
    )
    server = await asyncio.to_thread(ServerProcess(env, workers=2).wait_ready)
    try:
        await eventually(lambda: ingest_heartbeat(server), 30, "the leader's heartbeat")
        admin = await asyncio.to_thread(admin_headers, server, fresh_pg_url)
        user = await signed_up(server.base_url)
        await tick(server, admin, "100")
        alert_id = await create_alert(server, user, "above", "125")
        marker_id = await create_alert(server, user, "above", "130")
        watchers = [await following(server) for _ in range(2)]
        listener = await listening(server, user)
        await eventually(lambda: alerts_loaded([server]) == 2, 30, "both alerts in the engine")

        for price in range(101, 111):
            await tick(server, admin, str(price))
        before = [await stream_until(client, "110") for client in watchers]

        victim = cluster.master_of("{" + CHANNEL + "}")
        victim.kill()
        # Ticks keep coming while the shard is away (those the cluster refuses are retried).
        ticking = asyncio.create_task(tick(server, admin, "111"))
        await asyncio.to_thread(wait_promoted, cluster, victim)
        await ticking

        # An admin tick is fire-and-forget on the bus: one accepted while no worker led
        # ingest, or before the new leader followed the admin channel again, reached no
        # one. Tick until one comes through the new leader.
        async def through() -> bool:
            await tick(server, admin, "111")
            return await watchers[0].arrived(
                lambda m: m.get("channel") == CHANNEL and price_of(m) == "111", 1.0
            )

        await until(through, 60, "a tick through the new leader")
        for price in range(112, 121):
            await tick(server, admin, str(price))
        after = [await stream_until(client, "120") for client in watchers]

        for seen_before, seen_after in zip(before, after, strict=True):
            assert contiguous(seen_before + seen_after), seen_before + seen_after
            assert price_of(seen_after[-1]) == "120"

        await tick(server, admin, "125")  # fires the alert
        await tick(server, admin, "126")  # a one-shot alert fires once
        await tick(server, admin, "130")  # the marker
        pushed = await next_notification(listener, timeout=60)
        assert pushed["data"]["data"]["alert_id"] == alert_id
        marker = await next_notification(listener, timeout=60)
        assert marker["data"]["data"]["alert_id"] == marker_id
        assert marker["seq"] == pushed["seq"] + 1  # nothing in between: no second firing
        fired = [n["data"]["alert_id"] for n in await notifications(server, user)]
        assert fired == [marker_id, alert_id]
        for client in [*watchers, listener]:
            await client.close()
    finally:
        await asyncio.to_thread(server.stop)
