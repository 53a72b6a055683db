"""The WebSocket hub over the in-process bus and real Sanic WebSockets.

What a client sees: a subscription starts with the channel's newest state (or exactly the
updates it missed) and continues with every update in order, whatever the bus lost,
repeated or forgot on the way; a socket that cannot keep up gets its backlog (tickers
conflated) once it reads again, or is closed 1013; revoked, expired and silent sockets
are dealt with by the hub's upkeep.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from coinlink import channels
from coinlink.accounts.tokens import AccessClaims
from coinlink.bus import BusError, Message
from coinlink.market.view import MarketView
from coinlink.realtime import protocol
from coinlink.realtime.connection import HIGH_WATER, Connection
from coinlink.realtime.hub import RESTART_REASON, Hub, HubSettings
from coinlink.wire import now_ms
from tests.support.buses import FaultyBus
from tests.support.metrics import sample
from tests.support.services import until
from tests.support.ws_pairs import Peer, WsEndpoint

SYMBOLS = ["BTC-USD", "ETH-USD"]
TICKER = channels.ticker("BTC-USD")
CANDLES = channels.candles("BTC-USD", "1m")
IP = "192.0.2.1"


def tick(n: int | str, pad: int = 0) -> bytes:
    return orjson.dumps({"symbol": "BTC-USD", "price": str(n), "ts": now_ms(), "pad": "x" * pad})


async def valid(claims: AccessClaims) -> bool:
    return True


def new_hub(
    bus: FaultyBus | None = None,
    session_valid: Callable[[AccessClaims], Awaitable[bool]] = valid,
    **settings: Any,
) -> Hub:
    view = MarketView(SYMBOLS, staleness_s=30)
    return Hub(bus or FaultyBus(), view, HubSettings(**settings), session_valid)


@contextlib.asynccontextmanager
async def started(hub: Hub) -> AsyncIterator[Hub]:
    """The hub running, already following the bus (what is published from now on, it sees)."""
    bus = hub.bus
    assert isinstance(bus, FaultyBus)
    await hub.start()
    try:
        await until(lambda: TICKER in bus.followed(), what="the hub following the bus")
        yield hub
    finally:
        await hub.close()


@contextlib.asynccontextmanager
async def running(bus: FaultyBus | None = None, **settings: Any) -> AsyncIterator[Hub]:
    async with started(new_hub(bus, **settings)) as hub:
        yield hub


async def published(hub: Hub, channel: str, *data: bytes) -> None:
    """Publish, and wait until the hub has handled the last of them."""
    for item in data:
        seq = await hub.bus.publish(channel, item)
    await until(lambda: hub.last.get(channel) == seq, what=f"{channel} seq {seq} handled")


async def socket(hub: Hub, endpoint: WsEndpoint) -> tuple[Connection, Peer]:
    ws, peer = await endpoint.open()
    return hub.connect(ws, IP), peer


async def subscribe(hub: Hub, conn: Connection, channel: str, since: int | None = None) -> bool:
    """What the session does for one channel: prefetch, attach, send the first frames."""
    if channel.startswith(channels.PRIVATE_PREFIX):
        await hub.follow_private(channel)
    fetched = None if since is None else await hub.prefetch(channel, since)
    recovered, frames = hub.attach(conn, channel, since, fetched)
    for frame in frames:
        assert conn.send(frame)
    return recovered


async def ticker_subscriber(hub: Hub, endpoint: WsEndpoint) -> Peer:
    conn, peer = await socket(hub, endpoint)
    await subscribe(hub, conn, TICKER)
    return peer


def seen(messages: list[Any]) -> list[tuple[str, int, str | None]]:
    """(type, seq, price) of each message."""
    return [
        (m["type"], m["seq"], m["data"]["price"] if isinstance(m["data"], dict) else None)
        for m in messages
    ]


def lag(conn: Connection) -> None:
    """Fill the socket's transport past the high-water mark (its client reads nothing)."""
    assert conn.send(protocol.message({"type": "filler", "pad": "x" * 2 * HIGH_WATER}))
    assert conn.transport.get_write_buffer_size() > HIGH_WATER


async def marker_is_next(conn: Connection, peer: Peer) -> None:
    """Nothing else is on its way to the client: a frame written now is the next it reads."""
    conn.transport.write(protocol.message({"type": "marker"}))
    assert (await peer.message())["type"] == "marker"


def claims(session_id: str, expires_in_s: int = 300) -> AccessClaims:
    return AccessClaims("user-1", session_id, uuid.uuid4().hex, int(time.time()) + expires_in_s)


# -- subscribing and recovering ------------------------------------------------------------


async def test_a_subscriber_gets_the_newest_state_then_every_update_in_order(
    endpoint: WsEndpoint,
) -> None:
    async with running() as hub:
        await published(hub, TICKER, tick(1), tick(2), tick(3))
        await published(hub, CANDLES, b'{"n":1}', b'{"n":2}')
        conn, peer = await socket(hub, endpoint)
        assert not await subscribe(hub, conn, TICKER)
        assert not await subscribe(hub, conn, CANDLES)
        await hub.bus.publish(TICKER, tick(4))
        await hub.bus.publish(TICKER, tick(5))
        messages = await peer.messages(4)
        assert messages.pop(1) == {
            "type": "snapshot",
            "channel": CANDLES,
            "seq": 2,
            "data": {"n": 2},
        }
        assert {m["channel"] for m in messages} == {TICKER}
        assert seen(messages) == [("snapshot", 3, "3"), ("update", 4, "4"), ("update", 5, "5")]
        # The worker's REST view follows the same stream.
        assert hub.view.ticker("BTC-USD", now_ms())["price"] == "5"


async def test_before_the_first_message_the_snapshot_is_what_the_view_knows(
    endpoint: WsEndpoint,
) -> None:
    async with running() as hub:
        conn, peer = await socket(hub, endpoint)
        for channel in (TICKER, channels.TICKERS, CANDLES):
            await subscribe(hub, conn, channel)
        ticker, tickers, candle = await peer.messages(3)
        assert ticker["type"] == "snapshot" and ticker["seq"] == 0
        # The shape updates have: the view's REST fields seq and stale are not in it.
        assert ticker["data"]["symbol"] == "BTC-USD" and ticker["data"]["price"] is None
        assert "seq" not in ticker["data"] and "stale" not in ticker["data"]
        assert (tickers["seq"], tickers["data"]) == (0, [])
        assert (candle["seq"], candle["data"]) == (0, None)

        # A symbol's ticker known before the first batch of all tickers: it is in the list.
        await published(hub, TICKER, tick(7))
        other, other_peer = await socket(hub, endpoint)
        await subscribe(hub, other, channels.TICKERS)
        (only,) = (await other_peer.message())["data"]
        assert only["price"] == "7" and "seq" not in only and "stale" not in only


@pytest.mark.parametrize(("since", "replayed"), [(2, [3, 4, 5]), (5, []), (0, [1, 2, 3, 4, 5])])
async def test_since_within_the_hubs_memory_replays_exactly_what_was_missed(
    endpoint: WsEndpoint, since: int, replayed: list[int]
) -> None:
    async with running() as hub:
        await published(hub, TICKER, *(tick(n) for n in range(1, 6)))
        conn, peer = await socket(hub, endpoint)
        assert await subscribe(hub, conn, TICKER, since=since)
        await hub.bus.publish(TICKER, tick(6))
        messages = await peer.messages(len(replayed) + 1)
        assert seen(messages) == [("update", n, str(n)) for n in [*replayed, 6]]


async def test_since_beyond_the_hubs_memory_is_read_from_the_bus_history(
    endpoint: WsEndpoint,
) -> None:
    async with running(history_size=3) as hub:  # the bus keeps 100
        await published(hub, TICKER, *(tick(n) for n in range(1, 11)))
        conn, peer = await socket(hub, endpoint)
        assert await subscribe(hub, conn, TICKER, since=4)
        assert seen(await peer.messages(6)) == [("update", n, str(n)) for n in range(5, 11)]


@pytest.mark.parametrize("since", [3, 50])
async def test_since_the_bus_no_longer_has_or_never_had_gets_a_snapshot(
    endpoint: WsEndpoint, since: int
) -> None:
    async with running(FaultyBus(history_size=5), history_size=5) as hub:
        await published(hub, TICKER, *(tick(n) for n in range(1, 11)))
        conn, peer = await socket(hub, endpoint)
        assert not await subscribe(hub, conn, TICKER, since=since)
        await hub.bus.publish(TICKER, tick(11))
        assert seen(await peer.messages(2)) == [("snapshot", 10, "10"), ("update", 11, "11")]


async def test_since_ahead_of_this_hub_waits_for_it_and_recovers(endpoint: WsEndpoint) -> None:
    # The client saw seq 6 on another instance; this hub has not handled it yet.
    async with running() as hub:
        await published(hub, TICKER, *(tick(n) for n in range(1, 6)))
        await hub.bus.publish_unseen(TICKER, tick(6))
        conn, peer = await socket(hub, endpoint)
        subscribing = asyncio.create_task(subscribe(hub, conn, TICKER, since=6))
        await until(lambda: hub._advanced is not None, what="the subscription waiting")
        await hub.bus.publish(TICKER, tick(7))  # the hub fills 6 from history, then 7
        assert await subscribing
        await hub.bus.publish(TICKER, tick(8))
        assert seen(await peer.messages(2)) == [("update", 7, "7"), ("update", 8, "8")]


async def test_a_replay_too_big_for_half_the_sockets_budget_is_a_snapshot_instead(
    endpoint: WsEndpoint,
) -> None:
    async with running(buffer_bytes=4096) as hub:
        await published(hub, TICKER, *(tick(n, pad=600) for n in range(1, 6)))
        conn, peer = await socket(hub, endpoint)
        # 4 missed updates of ~650 bytes: more than 2048, though the hub has them all.
        assert not await subscribe(hub, conn, TICKER, since=1)
        assert seen([await peer.message()]) == [("snapshot", 5, "5")]


# -- what the bus does wrong ---------------------------------------------------------------


async def lost_on_the_way(bus: FaultyBus) -> int:
    """Two updates lost, the next arrives: the gap is read from history."""
    await bus.publish(TICKER, tick(1))
    await bus.publish_unseen(TICKER, tick(2))
    await bus.publish_unseen(TICKER, tick(3))
    return await bus.publish(TICKER, tick(4))


async def lost_during_a_reconnect(bus: FaultyBus) -> int:
    """Two updates lost, then the subscription says it reconnected; nothing else comes."""
    await bus.publish(TICKER, tick(1))
    await bus.publish_unseen(TICKER, tick(2))
    last = await bus.publish_unseen(TICKER, tick(3))
    bus.resubscribed()
    return last


async def delivered_twice(bus: FaultyBus) -> int:
    await bus.publish(TICKER, tick(1))
    await bus.publish(TICKER, tick(2))
    bus.redeliver(Message(TICKER, 1, tick(1)))
    return await bus.publish(TICKER, tick(3))


@pytest.mark.parametrize("mishap", [lost_on_the_way, lost_during_a_reconnect, delivered_twice])
async def test_the_client_gets_every_update_once_and_in_order_whatever_the_bus_did(
    endpoint: WsEndpoint, mishap: Callable[[FaultyBus], Awaitable[int]]
) -> None:
    bus = FaultyBus()
    async with running(bus) as hub:
        peer = await ticker_subscriber(hub, endpoint)
        last = await mishap(bus)
        assert seen(await peer.messages(last + 1)) == [
            ("snapshot", 0, None),
            *[("update", n, str(n)) for n in range(1, last + 1)],
        ]


async def test_a_gap_older_than_the_bus_history_continues_with_a_snapshot(
    endpoint: WsEndpoint,
) -> None:
    bus = FaultyBus(history_size=2)
    async with running(bus) as hub:
        peer = await ticker_subscriber(hub, endpoint)
        await bus.publish(TICKER, tick(1))
        for n in range(2, 6):
            await bus.publish_unseen(TICKER, tick(n))
        await bus.publish(TICKER, tick(6))
        await bus.publish(TICKER, tick(7))
        assert seen(await peer.messages(4)) == [
            ("snapshot", 0, None),
            ("update", 1, "1"),
            ("snapshot", 6, "6"),
            ("update", 7, "7"),
        ]


async def test_after_losing_the_bus_the_hub_follows_again_and_catches_up(
    endpoint: WsEndpoint,
) -> None:
    bus = FaultyBus()
    async with running(bus) as hub:
        peer = await ticker_subscriber(hub, endpoint)
        await published(hub, TICKER, tick(1))
        bus.down = True
        bus.redeliver(Message(TICKER, 1, tick(1)))  # checking it needs the bus: it fails
        await until(lambda: not bus.followed(), what="the hub letting its subscription go")
        bus.down = False
        await bus.publish(TICKER, tick(2))  # while the hub waits to subscribe again
        await bus.publish(TICKER, tick(3))
        assert seen(await peer.messages(4)) == [
            ("snapshot", 0, None),
            *[("update", n, str(n)) for n in range(1, 4)],
        ]


async def test_after_the_bus_lost_its_data_the_channel_restarts_with_a_snapshot(
    endpoint: WsEndpoint,
) -> None:
    bus = FaultyBus()
    async with running(bus) as hub:
        await published(hub, TICKER, tick(1), tick(2), tick(3))
        peer = await ticker_subscriber(hub, endpoint)
        bus.lose_everything()  # Redis restarted empty
        await bus.publish(TICKER, tick(10))
        await bus.publish(TICKER, tick(11))
        assert seen(await peer.messages(3)) == [
            ("snapshot", 3, "3"),
            ("snapshot", 1, "10"),
            ("update", 2, "11"),
        ]
        assert hub.view.ticker("BTC-USD", now_ms())["price"] == "11"


async def test_control_channels_go_to_their_handler_not_to_sockets(endpoint: WsEndpoint) -> None:
    hub = new_hub()
    changes: list[bytes] = []
    hub.on(channels.ALERT_CHANGES, changes.append)
    async with started(hub):
        await published(hub, channels.ALERT_CHANGES, b'{"id":"a"}', b'{"id":"b"}')
        assert changes == [b'{"id":"a"}', b'{"id":"b"}']


# -- private channels ----------------------------------------------------------------------


async def test_notifications_reach_only_their_users_sockets(endpoint: WsEndpoint) -> None:
    alice, bob = channels.notifications("alice"), channels.notifications("bob")
    bus = FaultyBus()
    async with running(bus) as hub:
        await bus.publish(alice, b'{"n":"before"}')  # the REST API has that one
        alice_conn, alice_peer = await socket(hub, endpoint)
        bob_conn, bob_peer = await socket(hub, endpoint)
        await subscribe(hub, alice_conn, alice)
        await subscribe(hub, bob_conn, bob)
        await bus.publish(alice, b'{"n":"a1"}')
        await bus.publish(bob, b'{"n":"b1"}')
        await bus.publish(alice, b'{"n":"a2"}')
        received = await alice_peer.messages(3)
        assert [(m["type"], m["channel"], m["seq"], m["data"]) for m in received] == [
            ("snapshot", "notifications", 1, None),
            ("update", "notifications", 2, {"n": "a1"}),
            ("update", "notifications", 3, {"n": "a2"}),
        ]
        assert [m["data"] for m in await bob_peer.messages(2)] == [None, {"n": "b1"}]
        assert {alice, bob} <= bus.followed()

        # The last local subscriber gone, the worker stops following the channel.
        hub.detach(alice_conn, alice)
        await until(lambda: alice not in bus.followed(), what="alice's channel unfollowed")
        assert bob in bus.followed()


async def test_a_bus_failure_while_following_leaves_the_channel_to_follow_again(
    endpoint: WsEndpoint,
) -> None:
    alice = channels.notifications("alice")
    bus = FaultyBus()
    async with running(bus) as hub:
        conn, peer = await socket(hub, endpoint)
        bus.down = True
        with pytest.raises(BusError):
            await hub.follow_private(alice)
        bus.down = False
        await subscribe(hub, conn, alice)
        await bus.publish(alice, b'{"n":"a1"}')
        assert [m["data"] for m in await peer.messages(2)] == [None, {"n": "a1"}]


# -- slow clients ---------------------------------------------------------------------------


async def test_a_slow_reader_gets_its_backlog_conflated_and_the_others_keep_pace(
    endpoint: WsEndpoint,
) -> None:
    async with running() as hub:
        fast, fast_peer = await socket(hub, endpoint)
        slow, slow_peer = await socket(hub, endpoint)
        for conn in (fast, slow):
            await subscribe(hub, conn, TICKER)
            await subscribe(hub, conn, CANDLES)
        lag(slow)
        for n in range(1, 21):
            await hub.bus.publish(TICKER, tick(n))
            await hub.bus.publish(CANDLES, orjson.dumps({"n": n}))
        fast_got = await fast_peer.messages(42)
        assert [m["seq"] for m in fast_got if m["channel"] == TICKER] == list(range(21))
        assert [m["seq"] for m in fast_got if m["channel"] == CANDLES] == list(range(21))

        # The slow client reads again; the hub's upkeep hands it the backlog: every candle
        # update in order, of the ticker only the newest.
        slow_got = await slow_peer.messages(2 + 1 + 20 + 1)
        assert [m["type"] for m in slow_got[:3]] == ["snapshot", "snapshot", "filler"]
        backlog = slow_got[3:]
        assert [m["seq"] for m in backlog if m["channel"] == CANDLES] == list(range(1, 21))
        assert [m["seq"] for m in backlog if m["channel"] == TICKER] == [20]
        await until(lambda: not hub.laggards, what="the laggard flushed")
        await hub.bus.publish(TICKER, tick(21))
        assert seen([await slow_peer.message()]) == [("update", 21, "21")]


async def test_a_socket_further_behind_than_its_budget_is_closed_1013_at_once(
    endpoint: WsEndpoint,
) -> None:
    async with running(buffer_bytes=8192) as hub:
        fast, fast_peer = await socket(hub, endpoint)
        slow, slow_peer = await socket(hub, endpoint)
        for conn in (fast, slow):
            await subscribe(hub, conn, CANDLES)
        lag(slow)
        closes_before = sample("ws_closes_total", code="1013")
        for n in range(1, 11):
            await hub.bus.publish(CANDLES, orjson.dumps({"n": n, "pad": "x" * 1000}))
        assert [m["seq"] for m in await fast_peer.messages(11)] == list(range(11))
        code, reason, before = await slow_peer.closed()
        assert (code, reason) == (1013, "too slow to keep up")
        assert [m["type"] for m in before] == ["snapshot", "filler"]  # the backlog dropped
        assert sample("ws_closes_total", code="1013") == closes_before + 1


async def test_a_socket_that_stays_behind_too_long_is_closed_1013(endpoint: WsEndpoint) -> None:
    async with running(slow_close_s=0.2) as hub:
        conn, peer = await socket(hub, endpoint)
        await subscribe(hub, conn, TICKER)
        lag(conn)
        await hub.bus.publish(TICKER, tick(1))  # within budget: it waits, conflated
        await until(lambda: conn.closing, what="the laggard closed")
        code, reason, before = await peer.closed()
        assert (code, reason) == (1013, "too slow to keep up")
        assert [m["type"] for m in before] == ["snapshot", "filler"]


async def test_a_resubscribe_replaces_the_waiting_update_and_an_unsubscribe_drops_it(
    endpoint: WsEndpoint,
) -> None:
    async with running() as hub:
        conn, peer = await socket(hub, endpoint)
        await subscribe(hub, conn, TICKER)
        await subscribe(hub, conn, channels.TICKERS)
        lag(conn)
        await hub.bus.publish(TICKER, tick(1))
        await published(hub, channels.TICKERS, b'[{"n":1}]')  # both wait, conflated
        await subscribe(hub, conn, TICKER)  # the snapshot carries what seq 1 would have
        hub.detach(conn, channels.TICKERS)  # nothing of it after the ack
        received = await peer.messages(4)
        assert [m["type"] for m in received[:3]] == ["snapshot", "snapshot", "filler"]
        assert seen(received[3:]) == [("snapshot", 1, "1")]
        await until(lambda: not hub.laggards, what="the laggard flushed")
        await marker_is_next(conn, peer)


# -- closing sockets --------------------------------------------------------------------------


async def test_a_revoked_session_closes_its_sockets_1008_and_only_those(
    endpoint: WsEndpoint,
) -> None:
    async with running() as hub:
        revoked, revoked_peer = await socket(hub, endpoint)
        moved, moved_peer = await socket(hub, endpoint)
        kept, kept_peer = await socket(hub, endpoint)
        anonymous, anonymous_peer = await socket(hub, endpoint)
        hub.authenticate(revoked, claims("s1"))
        hub.authenticate(moved, claims("s1"))
        hub.authenticate(moved, claims("s3"))  # re-authenticated: no longer s1's
        hub.authenticate(kept, claims("s2"))
        for conn in (moved, kept, anonymous):
            await subscribe(hub, conn, TICKER)
        for bad in (b"not json", b'{"sessions": "s1"}', b"[]"):
            await hub.bus.publish(channels.REVOCATIONS, bad)  # ignored, with a warning
        closes_before = sample("ws_closes_total", code="1008")
        for _ in range(2):  # the second finds the socket closing already
            await hub.bus.publish(channels.REVOCATIONS, orjson.dumps({"sessions": ["s1", "s9"]}))
        assert (await revoked_peer.closed())[:2] == (1008, "session revoked")
        await hub.bus.publish(TICKER, tick(1))
        for peer in (moved_peer, kept_peer, anonymous_peer):
            assert seen(await peer.messages(2)) == [("snapshot", 0, None), ("update", 1, "1")]
        assert sample("ws_closes_total", code="1008") == closes_before + 1


async def test_upkeep_closes_sockets_whose_token_expired_1008(endpoint: WsEndpoint) -> None:
    hub = new_hub()
    expired, expired_peer = await socket(hub, endpoint)
    fresh, fresh_peer = await socket(hub, endpoint)
    hub.authenticate(expired, claims("s1", expires_in_s=-1))
    hub.authenticate(fresh, claims("s2"))
    await subscribe(hub, fresh, TICKER)
    async with started(hub):  # the first sweep comes at once
        assert (await expired_peer.closed())[:2] == (1008, "access token expired")
        await hub.bus.publish(TICKER, tick(1))
        assert seen(await fresh_peer.messages(2)) == [("snapshot", 0, None), ("update", 1, "1")]


async def test_upkeep_closes_sockets_whose_session_no_longer_holds_1008(
    endpoint: WsEndpoint,
) -> None:
    asked: list[str] = []

    async def session_valid(claims: AccessClaims) -> bool:
        asked.append(claims.session_id)
        if len(asked) == 1:
            raise ConnectionError("database away")  # that round is skipped, not fatal
        return claims.session_id != "s1"

    hub = new_hub(session_valid=session_valid, revalidate_s=0.01)
    revoked, revoked_peer = await socket(hub, endpoint)
    kept, kept_peer = await socket(hub, endpoint)
    hub.authenticate(revoked, claims("s1"))
    hub.authenticate(kept, claims("s2"))
    await subscribe(hub, kept, TICKER)
    async with started(hub):
        assert (await revoked_peer.closed())[:2] == (1008, "session revoked")
        assert len(asked) >= 3  # asked again after the failed round
        await hub.bus.publish(TICKER, tick(1))
        assert seen(await kept_peer.messages(2)) == [("snapshot", 0, None), ("update", 1, "1")]


async def test_silent_sockets_get_heartbeats_and_busy_ones_do_not(endpoint: WsEndpoint) -> None:
    async with running(heartbeat_s=0.3) as hub:
        _, silent_peer = await socket(hub, endpoint)
        busy, busy_peer = await socket(hub, endpoint)
        await subscribe(hub, busy, TICKER)

        async def keep_busy() -> None:
            for n in range(1, 1000):
                await hub.bus.publish(TICKER, tick(n))
                await asyncio.sleep(0.05)  # pacing a feed, not waiting for anything

        feed = asyncio.create_task(keep_busy())
        try:
            beat = await silent_peer.message()
        finally:
            feed.cancel()
        assert beat["type"] == "heartbeat" and abs(beat["ts"] - now_ms()) < 5000
        await hub.bus.publish(TICKER, tick("end"))
        kinds = []
        while (message := await busy_peer.message())["data"]["price"] != "end":
            kinds.append(message["type"])
        assert "heartbeat" not in kinds and "update" in kinds


async def test_closing_the_hub_closes_every_socket_1001_and_leaves_the_bus(
    endpoint: WsEndpoint,
) -> None:
    bus = FaultyBus()
    hub = new_hub(bus)
    async with started(hub):
        first, first_peer = await socket(hub, endpoint)
        _, second_peer = await socket(hub, endpoint)
        await subscribe(hub, first, TICKER)
    for peer in (first_peer, second_peer):
        assert (await peer.closed())[:2] == (1001, RESTART_REASON)
    assert bus.followed() == set()


async def test_a_removed_socket_is_forgotten(endpoint: WsEndpoint) -> None:
    async with running() as hub:
        connections_before = sample("ws_connections")
        conn, peer = await socket(hub, endpoint)
        other, _ = await socket(hub, endpoint)
        assert hub.per_ip[IP] == 2 and sample("ws_connections") == connections_before + 2
        hub.authenticate(conn, claims("s1"))
        await subscribe(hub, conn, TICKER)
        assert seen([await peer.message()]) == [("snapshot", 0, None)]
        hub.remove(conn)
        hub.remove(conn)  # the handler's finally may run after a close already removed it
        assert hub.per_ip[IP] == 1 and sample("ws_connections") == connections_before + 1
        await published(hub, TICKER, tick(1))
        await published(hub, channels.REVOCATIONS, orjson.dumps({"sessions": ["s1"]}))
        await marker_is_next(conn, peer)  # no update, no close frame
        hub.remove(other)
        assert IP not in hub.per_ip  # the address may connect again up to its cap
