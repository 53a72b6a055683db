"""The WebSocket stream against a real server (two workers): every published update is
seen once and in order, across a lossy network, a frozen worker and an expiring token."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from decimal import Decimal
from typing import Any

import pytest

from coinlink_client import (
    AsyncClient,
    Notification,
    Recovered,
    Resynced,
    Snapshot,
    Stream,
    StreamError,
    Ticker,
    Update,
)
from tests.client.conftest import (
    events_through,
    events_until,
    expiring,
    from_snapshot,
    has_update,
    prefix,
    seqs,
    serving_worker,
    signed_up,
    url,
)
from tests.support.apps import ServerProcess
from tests.support.lossy_proxy import LossyProxy
from tests.support.services import until
from tests.support.ws import Publisher, notification_data

pytestmark = pytest.mark.timeout(60)
CHANNEL = "ticker:BTC-USD"


async def test_a_ticker_consumer_gets_a_snapshot_then_every_update(
    server: ServerProcess,
) -> None:
    async with (
        Publisher(server.env["COINLINK_REDIS_URL"], prefix(server)) as publisher,
        Stream(url(server), [CHANNEL, "candles:BTC-USD:1m"]) as stream,
    ):
        first = [await anext(stream), await anext(stream)]
        assert {e.channel for e in first} == {CHANNEL, "candles:BTC-USD:1m"}
        assert all(isinstance(e, Snapshot) for e in first)
        published = await publisher.ticks(CHANNEL, 5)
        events = await events_through(stream, CHANNEL, published[-1])
        assert seqs(events, CHANNEL) == from_snapshot(first, CHANNEL, published[-1])
        update = events[-1]
        assert isinstance(update, Update) and isinstance(update.data, Ticker)
        assert update.data.price == Decimal("50004.5")

        await stream.unsubscribe("candles:BTC-USD:1m")
        assert stream.channels == [CHANNEL]
        await stream.subscribe("tickers")
        assert stream.channels == [CHANNEL, "tickers"]
        with pytest.raises(StreamError) as unknown:
            await stream.subscribe("ticker:PEPE-USD")
        assert unknown.value.code == "unknown_channel"
        assert stream.channels == [CHANNEL, "tickers"]

    with pytest.raises(StreamError) as refused:
        async with Stream(url(server), ["ticker:PEPE-USD"]):
            pass
    assert refused.value.code == "unknown_channel"


async def test_a_lost_frame_is_noticed_and_recovered_from_the_server(
    server: ServerProcess,
) -> None:
    snapshots: list[int] = []

    def lost(frame: dict[str, Any]) -> bool:
        """The third update after the snapshot, the first time it passes (not its replay)."""
        if frame["type"] == "snapshot":
            snapshots.append(frame["seq"])
        return frame["type"] == "update" and frame["seq"] == snapshots[0] + 3 and not proxy.lost

    async with (
        Publisher(server.env["COINLINK_REDIS_URL"], prefix(server)) as publisher,
        LossyProxy(server.port, lost) as proxy,
        Stream(proxy.url, [CHANNEL]) as stream,
    ):
        first = [await anext(stream)]
        published = await publisher.ticks(CHANNEL, 8)
        events = await events_through(stream, CHANNEL, published[-1])
    [lose] = [m["seq"] for m in proxy.lost]
    assert seqs(events, CHANNEL) == from_snapshot(first, CHANNEL, published[-1])
    assert Recovered(CHANNEL, lose - 1) in events  # resubscribed with since
    assert stream.reconnects == 0


async def test_a_frozen_worker_is_noticed_by_its_silence_and_replaced(
    server: ServerProcess,
) -> None:
    async with (
        Publisher(server.env["COINLINK_REDIS_URL"], prefix(server)) as publisher,
        # The server's heartbeat is 1 s: 5 s of silence is a dead socket even on a loaded
        # machine, and a frozen worker is noticed that soon.
        Stream(url(server), [CHANNEL], heartbeat_s=2, open_timeout_s=2) as stream,
    ):
        assert isinstance(await anext(stream), Snapshot)
        published = await publisher.ticks(CHANNEL, 3)
        await events_through(stream, CHANNEL, published[-1])
        worker = serving_worker(server, stream)
        os.kill(worker, signal.SIGSTOP)
        try:
            started = time.monotonic()
            published = await publisher.ticks(CHANNEL, 5)
            events = await events_through(stream, CHANNEL, published[-1])
            took = time.monotonic() - started
        finally:
            os.kill(worker, signal.SIGCONT)
        assert seqs(events, CHANNEL) == published
        assert events[0] == Recovered(CHANNEL, published[0] - 1)
        assert stream.reconnects == 1
        assert took < 20, took  # 2.5 heartbeats of silence, then a reconnect


async def test_an_expiring_token_is_refreshed_and_notifications_keep_coming(
    server: ServerProcess,
) -> None:
    """Two users at once (waiting for an expiry is most of the cost of each). In time:
    the new token is sent on the open socket. Late (a process suspended past the expiry):
    the server closes with 1008, and the stream reconnects with a new one."""
    in_time, late = await asyncio.gather(
        through_an_expiry(server, margin_s=2.0), through_an_expiry(server, margin_s=-3.0)
    )
    assert (in_time, late) == (0, 1)  # reconnects


async def through_an_expiry(server: ServerProcess, margin_s: float) -> int:
    """A stream of a ticker and the notifications of a user whose access token expires
    4 s in, refreshed ``margin_s`` before that; how often it reconnected."""
    signed = await signed_up(server)
    user = await signed.me()
    assert signed.tokens is not None
    tokens = expiring(signed.tokens, 4)
    client = AsyncClient(server.base_url, tokens=tokens, refresh_margin_s=margin_s)
    notifications = f"notifications:{user.id}"
    async with (
        signed,
        client,
        Publisher(server.env["COINLINK_REDIS_URL"], prefix(server)) as publisher,
        Stream(url(server), [CHANNEL, "notifications"], client=client) as stream,
    ):
        published = await publisher.ticks(CHANNEL, 2)
        events = await events_through(stream, CHANNEL, published[-1])

        def refreshed_and_expired() -> bool:
            """A new token, and the old one past its expiry and the second the server
            takes to notice it."""
            assert client.tokens is not None
            renewed = client.tokens.access_token != tokens.access_token
            return renewed and time.time() > tokens.expires_at + 2

        await until(refreshed_and_expired, 20, "the refresh and the expiry")

        note = await publisher.bus.publish(notifications, notification_data("BTC-USD above 50000"))
        published += await publisher.ticks(CHANNEL, 3)
        events += await events_until(
            stream,
            lambda got: (
                has_update(got, CHANNEL, published[-1]) and has_update(got, "notifications", note)
            ),
        )
    # The other user's ticks are on the same channel: contiguous all the same.
    assert seqs(events, CHANNEL) == from_snapshot(events, CHANNEL, published[-1])
    [alert] = [e.data for e in events if isinstance(e, Update) and e.channel == "notifications"]
    assert isinstance(alert, Notification) and alert.title == "BTC-USD above 50000"
    assert not [e for e in events if isinstance(e, Resynced)]
    return stream.reconnects


async def test_a_revoked_session_ends_the_stream_with_the_reason(server: ServerProcess) -> None:
    client = await signed_up(server)
    async with client, Stream(url(server), ["notifications"], client=client) as stream:
        assert isinstance(await anext(stream), Snapshot)
        await client.logout()  # from elsewhere, as far as the socket knows
        with pytest.raises(StreamError) as ended:
            await anext(stream)
        assert (ended.value.code, ended.value.close_code) == ("session_revoked", 1008)
        with pytest.raises(StreamError):  # and so does every read after
            await anext(stream)


async def test_a_refused_handshake_or_an_unknown_channel_fails_at_once(
    server: ServerProcess,
) -> None:
    """A mistake retrying cannot mend is raised on entering, not retried for ever."""
    with pytest.raises(StreamError) as refused:
        async with Stream(url(server).replace("/ws", "/no-such-socket"), [CHANNEL]):
            pass
    assert refused.value.code == "http_404"
    with pytest.raises(StreamError) as unknown:
        async with Stream(url(server), ["ticker:NOPE-USD"]):
            pass
    assert unknown.value.code == "unknown_channel"
