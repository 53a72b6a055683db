"""Faults that end a server's part in a stream, one after the other on one server of the
test's own (starting servers is most of what such a test costs): a worker killed, Redis
restarted empty, the server restarted."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from coinlink_client import Event, Recovered, Resynced, Snapshot, Stream, Update
from tests.client.conftest import (
    events_through,
    events_until,
    prefix,
    restarted,
    seqs,
    serving_worker,
    start,
    url,
)
from tests.support import log_guard
from tests.support.apps import metric
from tests.support.services import RedisServer, eventually, until
from tests.support.ws import Publisher

pytestmark = pytest.mark.timeout(90)
CHANNEL = "ticker:ETH-USD"


@pytest.mark.expected_errors(*log_guard.REDIS_GONE)
async def test_a_stream_outlives_a_killed_worker_a_redis_restart_and_a_server_restart(
    client_pg_url: str,
) -> None:
    redis = await asyncio.to_thread(RedisServer().start)
    server = await asyncio.to_thread(start, client_pg_url, redis.url)
    try:
        async with Stream(url(server), [CHANNEL], backoff_max_s=1) as stream:
            assert isinstance(await anext(stream), Snapshot)
            async with Publisher(redis.url, prefix(server)) as publisher:
                published = await publisher.ticks(CHANNEL, 3)
                await events_through(stream, CHANNEL, published[-1])

                # kill -9 of the worker serving the socket: the other one takes the
                # reconnect and replays what was published meanwhile.
                os.kill(serving_worker(server, stream), signal.SIGKILL)
                published = await publisher.ticks(CHANNEL, 5)
                events = await events_through(stream, CHANNEL, published[-1])
                assert events[0] == Recovered(CHANNEL, published[0] - 1)
                assert seqs(events, CHANNEL) == published
                assert stream.reconnects == 1

            # Redis restarted empty: the socket stays open, the restart is announced
            # (Resynced, then the snapshot of the new numbering), updates are contiguous.
            last = published[-1]
            seen = len(server.output())
            await asyncio.to_thread(redis.stop)
            # The hub notices on its subscription's connection, or on a history read it
            # was making for a message (then it drops the subscription and waits for Redis).
            noticed = ('"event":"bus.subscription.lost"', '"event":"hub_waiting_for_bus"')
            await eventually(
                lambda: any(event in server.output()[seen:] for event in noticed), 30, "the loss"
            )
            await asyncio.to_thread(redis.start)  # same port, empty: seq starts again at 1
            async with Publisher(redis.url, prefix(server)) as publisher:

                async def announced() -> Resynced | None:
                    """Until the hub has subscribed again, a tick reaches no one."""
                    await publisher.ticks(CHANNEL, 1)
                    try:
                        event = await asyncio.wait_for(anext(stream), 0.5)
                    except TimeoutError:
                        return None
                    assert isinstance(event, Resynced), event
                    return event

                assert await until(announced, 30, "updates after the restart") == Resynced(
                    CHANNEL, last, "reset"
                )
                snapshot = await anext(stream)
                assert isinstance(snapshot, Snapshot) and snapshot.seq < last
                published = await publisher.ticks(CHANNEL, 4)
                events = await events_through(stream, CHANNEL, published[-1])
                # From the snapshot on (ticks of the loop above may come first).
                assert seqs(events, CHANNEL) == list(range(snapshot.seq + 1, published[-1] + 1))
                assert all(isinstance(e, Update) for e in events)
                assert stream.reconnects == 1

                # SIGTERM (close 1001): while no server answers the stream keeps trying,
                # and the server started again on the same port replays what it missed.
                await asyncio.to_thread(server.stop)
                published = await publisher.ticks(CHANNEL, 5)
                server = await asyncio.to_thread(restarted, server)
                events = await events_through(stream, CHANNEL, published[-1])
                assert events[0] == Recovered(CHANNEL, published[0] - 1)
                assert seqs(events, CHANNEL) == published
                assert stream.reconnects == 2
    finally:
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(redis.stop)


async def test_a_consumer_that_falls_behind_is_closed_1013_and_still_sees_every_update(
    client_pg_url: str, redis_url: str
) -> None:
    """A consumer that stops reading: the stream's bounded queue fills and its reading
    stops, the server's buffer for the socket fills and the server closes it (1013); the
    stream comes back with ``since``, and the consumer sees each update once and in order,
    or a snapshot. Candles: a channel the server never conflates for a laggard."""
    channel = "candles:BTC-USD:1m"
    server = await asyncio.to_thread(
        start, client_pg_url, redis_url, ws_buffer_bytes="65536", ws_slow_close_s="1"
    )
    try:
        async with (
            Publisher(redis_url, prefix(server)) as publisher,
            Stream(url(server), [channel], queue_size=4) as stream,
        ):
            events = [await anext(stream)]
            # Nothing is read meanwhile: the backlog grows until the server gives up on it.
            while await asyncio.to_thread(metric, server, "ws_slow_consumer_closes_total") < 1:
                await publisher.ticks(channel, 50, size=8000)
            events += await events_until(stream, lambda got: came_back(got, channel))
            published = await publisher.ticks(channel, 5)
            events += await events_through(stream, channel, published[-1])
        assert stream.reconnects >= 1
        assert_each_update_once_in_order(events, channel)
    finally:
        await asyncio.to_thread(server.stop)


def came_back(events: list[Event], channel: str) -> bool:
    """The stream resumed ``channel`` after a reconnect: recovered, or resynced and its
    snapshot in."""
    mine = [e for e in events if e.channel == channel]
    return any(
        isinstance(e, Recovered)
        or (isinstance(e, Resynced) and any(isinstance(s, Snapshot) for s in mine[i + 1 :]))
        for i, e in enumerate(mine)
    )


def assert_each_update_once_in_order(events: list[Event], channel: str) -> None:
    """After the first snapshot, each update is the one after the last, or a snapshot
    announced by Resynced starts the count again."""
    mine = [e for e in events if e.channel == channel]
    assert isinstance(mine[0], Snapshot)
    last, announced = mine[0].seq, False
    for event in mine[1:]:
        if isinstance(event, Resynced):
            assert event.seq == last
            announced = True
        elif isinstance(event, Recovered):
            assert event.seq == last
        elif isinstance(event, Snapshot):
            assert announced, "a snapshot nobody was told about"
            last, announced = event.seq, False
        elif isinstance(event, Update):
            assert event.seq == last + 1, (last, event.seq)
            last = event.seq
