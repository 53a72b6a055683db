"""The bus contract: one suite, run against MemoryBus and RedisBus alike.

Everything a caller may rely on is asserted here for both backends, so the embedded default
and the shared deployment cannot drift apart. A few Redis-only tests follow (unreachable
server, restart under a live subscription).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import structlog

from coinlink.bus import (
    RESUBSCRIBED,
    Bus,
    BusError,
    MemoryBus,
    Message,
    RedisBus,
    Subscription,
    create_bus,
    redis_subscription,
)
from coinlink.redis_calls import connect
from tests.support.services import RedisServer, free_port, until

pytestmark = pytest.mark.timeout(60)


@dataclass
class Backend:
    """Makes started buses of one kind; every bus it made is closed after the test."""

    kind: str
    url: str | None
    prefix: str
    buses: list[Bus] = field(default_factory=list)

    async def new(self, history_size: int = 100) -> Bus:
        bus: Bus
        if self.url is None:
            bus = MemoryBus(history_size=history_size)
        else:
            bus = RedisBus(self.url, prefix=self.prefix, history_size=history_size)
        await bus.start()
        self.buses.append(bus)
        return bus

    async def peer(self, bus: Bus) -> Bus:
        """Another client of the same bus: a second RedisBus on the same prefix, or for
        the in-process bus (which only exists inside one process) the same instance."""
        if self.url is None:
            return bus
        assert isinstance(bus, RedisBus)
        return await self.new(history_size=bus.history_size)


URLS = {"memory": None, "redis": "redis_url", "cluster": "redis_cluster_url"}


@pytest.fixture(params=list(URLS))
async def backend(request: pytest.FixtureRequest, bus_prefix: str) -> AsyncIterator[Backend]:
    fixture = URLS[request.param]
    url = None if fixture is None else request.getfixturevalue(fixture)
    made = Backend(request.param, url, bus_prefix)
    yield made
    for bus in made.buses:
        await bus.close()
    if url is not None:  # leave the shared Redis as we found it
        client = connect(url)
        try:
            async for key in client.scan_iter(match=f"{bus_prefix}*"):
                await client.delete(key)
        finally:
            await client.aclose()


@pytest.fixture
async def bus(backend: Backend) -> Bus:
    return await backend.new()


async def take(sub: Subscription, count: int, timeout_s: float = 15.0) -> list[Message]:
    received: list[Message] = []
    async with asyncio.timeout(timeout_s):
        async for message in sub:
            received.append(message)
            if len(received) == count:
                break
    return received


async def next_matching(
    queue: asyncio.Queue[Message], accept: Callable[[Message], bool], timeout_s: float = 15.0
) -> list[Message]:
    """Everything taken from ``queue`` up to and including the first accepted message."""
    seen: list[Message] = []
    async with asyncio.timeout(timeout_s):
        while True:
            seen.append(await queue.get())
            if accept(seen[-1]):
                return seen


async def expired(bus: Bus, key: str) -> bool:
    return await bus.get(key) is None


def pump(sub: Subscription, queue: asyncio.Queue[Message]) -> asyncio.Task[None]:
    async def run() -> None:
        async for message in sub:
            queue.put_nowait(message)

    return asyncio.create_task(run())


# Channels


async def test_subscriber_receives_messages_in_order_with_exact_bytes(bus: Bus) -> None:
    sub = bus.subscription()
    await sub.subscribe("trades")
    payloads = [f'{{"n": {i}, "text": "a b  c"}}'.encode() for i in range(40)]
    payloads += [b"", b" ", b"12 34", bytes(range(256)), b"\x00\xff trailing "]
    seqs = [await bus.publish("trades", data) for data in payloads]

    received = await take(sub, len(payloads))

    assert seqs == list(range(1, len(payloads) + 1))
    assert received == [Message("trades", i, d) for i, d in enumerate(payloads, start=1)]
    assert await bus.last_seq("trades") == len(payloads)
    await sub.close()


async def test_messages_carry_their_publish_time(bus: Bus) -> None:
    sub = bus.subscription()
    await sub.subscribe("stamped")
    before = time.time_ns() // 1000
    await bus.publish("stamped", b"x")
    [live] = await take(sub, 1)
    after = time.time_ns() // 1000
    [kept] = await bus.history("stamped") or []

    # Redis stamps with its own clock: the same machine here, so within a second.
    assert before - 1_000_000 <= live.published_us <= after + 1_000_000
    assert kept.published_us == live.published_us
    await sub.close()


async def test_subscribe_and_unsubscribe_while_iterating(bus: Bus) -> None:
    sub = bus.subscription()
    await sub.subscribe("a", "b")
    queue: asyncio.Queue[Message] = asyncio.Queue()
    task = pump(sub, queue)
    await bus.publish("a", b"a1")
    await bus.publish("b", b"b1")
    first = await next_matching(queue, lambda m: m.data == b"b1")
    assert [m.data for m in first] == [b"a1", b"b1"]

    # The pump task is blocked inside the iterator while the set changes.
    await sub.subscribe("c")
    await sub.unsubscribe("a")
    await bus.publish("a", b"a2")
    await bus.publish("b", b"b2")
    await bus.publish("c", b"c1")
    await bus.publish("a", b"a3")
    await bus.publish("b", b"b3")
    after = await next_matching(queue, lambda m: m.data == b"b3")
    assert after == [Message("b", 2, b"b2"), Message("c", 1, b"c1"), Message("b", 3, b"b3")]

    # Back on "a": its sequence went on while nobody here listened.
    await sub.subscribe("a")
    await bus.publish("a", b"a4")
    assert await next_matching(queue, lambda m: True) == [Message("a", 4, b"a4")]

    # Dropping every channel, then taking one again, still works mid-iteration.
    await sub.unsubscribe("a", "b", "c")
    await bus.publish("b", b"b4")
    await sub.subscribe("c")
    await bus.publish("b", b"b5")
    await bus.publish("c", b"c2")
    assert await next_matching(queue, lambda m: True) == [Message("c", 2, b"c2")]

    await sub.close()
    await asyncio.wait_for(task, 3)  # close() ends the iteration
    assert queue.empty()
    with pytest.raises(BusError):
        await sub.subscribe("a")


async def test_unsubscribe_drops_messages_already_in_flight(bus: Bus) -> None:
    sub = bus.subscription()
    await sub.subscribe("a", "b")
    await bus.publish("a", b"a1")
    await bus.publish("b", b"b1")
    await bus.publish("a", b"a2")
    # In flight without waiting: a publish that returned has queued its message for this
    # subscription (the memory bus at once; Redis on the subscriber's connection, ahead
    # of the UNSUBSCRIBE that follows on it), where nobody has read it yet.
    await sub.unsubscribe("a")
    await bus.publish("b", b"b2")
    assert await take(sub, 2) == [Message("b", 1, b"b1"), Message("b", 2, b"b2")]
    await sub.close()


async def test_history_is_bounded(backend: Backend) -> None:
    bus = await backend.new(history_size=5)
    for i in range(1, 9):
        assert await bus.publish("book", f"m{i}".encode()) == i

    assert await bus.last_seq("book") == 8
    assert await bus.history("book", 0) is None
    assert await bus.history("book", 2) is None
    expected = [Message("book", s, f"m{s}".encode()) for s in range(4, 9)]
    assert await bus.history("book", 3) == expected
    assert await bus.history("book", 7) == [Message("book", 8, b"m8")]
    assert await bus.history("book", 8) == []
    assert await bus.history("book", 20) == []

    for i in range(1, 4):
        await bus.publish("short", f"s{i}".encode())
    short = [Message("short", s, f"s{s}".encode()) for s in (1, 2, 3)]
    assert await bus.history("short", 0) == short
    assert await bus.history("short", 1) == short[1:]

    assert await bus.history("never", 0) == []
    assert await bus.last_seq("never") == 0


async def test_sequence_is_global_across_two_clients(backend: Backend) -> None:
    first = await backend.new()
    second = await backend.peer(first)
    watcher = first.subscription()
    await watcher.subscribe("ticker")
    per_client = 60

    async def publish_all(bus: Bus, name: str) -> list[tuple[int, bytes]]:
        datas = [f"{name}-{i}".encode() for i in range(per_client)]
        seqs = await asyncio.gather(*(bus.publish("ticker", d) for d in datas))
        return list(zip(seqs, datas, strict=True))

    results = await asyncio.gather(publish_all(first, "one"), publish_all(second, "two"))
    published = dict(results[0] + results[1])

    total = 2 * per_client
    assert sorted(published) == list(range(1, total + 1))  # contiguous, no duplicates
    received = await take(watcher, total)
    assert [m.seq for m in received] == list(range(1, total + 1))
    assert all(published[m.seq] == m.data for m in received)
    assert await first.last_seq("ticker") == await second.last_seq("ticker") == total
    await watcher.close()


# Key/value


async def test_set_get_delete_and_ttl_expiry(bus: Bus) -> None:
    assert await bus.get("k") is None
    await bus.set("was-ttl", b"a", ttl_s=0.5)
    await bus.set("was-ttl", b"b")  # a set without TTL drops the earlier one
    await bus.set("p", b"\x00persistent")
    # Last, so that once it has expired the TTL "was-ttl" dropped would have run out too.
    await bus.set("k", b"short-lived", ttl_s=0.5)
    assert await bus.get("k") == b"short-lived"
    assert await bus.get_many("k", "missing", "p") == [b"short-lived", None, b"\x00persistent"]

    await until(lambda: expired(bus, "k"), 10, "k's expiry")
    assert await bus.get("p") == b"\x00persistent"
    assert await bus.get("was-ttl") == b"b"
    assert await bus.get_many("k", "p") == [None, b"\x00persistent"]
    await bus.delete("p")
    await bus.delete("p")  # deleting a missing key is fine
    assert await bus.get("p") is None
    with pytest.raises(ValueError):
        await bus.set("k", b"x", ttl_s=0)


async def test_incr_is_atomic_under_concurrency(bus: Bus) -> None:
    results = await asyncio.gather(*(bus.incr("hits") for _ in range(100)))
    assert sorted(results) == list(range(1, 101))
    assert await bus.get("hits") == b"100"
    assert await bus.incr("hits", 5) == 105
    assert await bus.incr("hits", -10) == 95


async def test_incr_ttl_is_set_when_the_counter_is_created(bus: Bus) -> None:
    assert await bus.incr("forever") == 1  # first: it outlives the window below
    assert await bus.incr("window", 1, ttl_s=0.5) == 1
    # A later, longer TTL does not extend the window (else this would wait 30 s, not 10).
    assert await bus.incr("window", 2, ttl_s=30) == 3
    await until(lambda: expired(bus, "window"), 10, "the window's end")
    assert await bus.incr("window", 1, ttl_s=30) == 1  # a new counter, a new window
    assert await bus.incr("forever") == 2


# Leases


async def lease_token(bus: Bus, name: str, holder: str, ttl_s: float) -> int | None:
    """A try at the lease: its token, or None while another holds it."""
    return (await bus.acquire_lease(name, holder, ttl_s)).token


async def test_a_refused_try_says_how_long_the_holders_grant_still_runs(bus: Bus) -> None:
    assert await lease_token(bus, "job", "a", 30) is not None
    refused = await bus.acquire_lease("job", "b", 5)
    assert refused.token is None
    assert 20 < refused.held_s <= 30  # a's grant (30 s), not b's ask (5 s)
    # The follower of take_turns sleeps that long: a short grant, a short wait.
    assert await lease_token(bus, "brief", "a", 2) is not None
    refused = await bus.acquire_lease("brief", "b", 5)
    assert refused.token is None and 0 < refused.held_s <= 2


async def test_lease_is_exclusive_and_reacquire_keeps_the_token(bus: Bus) -> None:
    token = await lease_token(bus, "candles", "worker-a", 5)
    assert isinstance(token, int)
    assert await lease_token(bus, "candles", "worker-b", 5) is None
    assert await lease_token(bus, "candles", "worker-a", 5) == token
    other = await lease_token(bus, "alerts", "worker-b", 5)
    assert other is not None and other != token


async def test_lease_expiry_hands_over_with_a_larger_token(bus: Bus) -> None:
    old = await lease_token(bus, "job", "a", 0.2)
    assert old is not None
    new = await until(lambda: lease_token(bus, "job", "b", 5), 10, "a's grant to run out")
    assert new > old
    assert await bus.renew_lease("job", "a", old, 5) is False  # stale holder and token
    assert await bus.renew_lease("job", "a", new, 5) is False  # right token, other holder
    assert await bus.renew_lease("job", "b", old, 5) is False  # right holder, stale token
    assert await bus.renew_lease("job", "b", new, 5) is True
    assert await lease_token(bus, "job", "a", 5) is None


async def test_renew_and_reacquire_extend_the_lease(bus: Bus) -> None:
    renewed = await lease_token(bus, "renewed", "a", 0.4)
    reacquired = await lease_token(bus, "reacquired", "a", 0.4)
    # Granted after them and never extended: once it is free, their first grants ran out.
    control = await lease_token(bus, "control", "a", 0.4)
    assert renewed is not None and reacquired is not None and control is not None
    assert await bus.renew_lease("renewed", "a", renewed, 1.2) is True
    assert await lease_token(bus, "reacquired", "a", 1.2) == reacquired
    await until(lambda: lease_token(bus, "control", "b", 5), 10, "the first grants' end")
    # Past the first grants, not past the extensions.
    assert await lease_token(bus, "renewed", "b", 5) is None
    assert await lease_token(bus, "reacquired", "b", 5) is None
    # The extensions end too ("renewed"'s first, it was extended first).
    await until(lambda: lease_token(bus, "reacquired", "b", 5), 10, "the extensions' end")
    assert await bus.renew_lease("renewed", "a", renewed, 5) is False  # expired meanwhile


async def test_release_lets_another_holder_in(bus: Bus) -> None:
    first = await lease_token(bus, "job", "a", 5)
    assert first is not None
    await bus.release_lease("job", "b", first)  # not the holder: no effect
    await bus.release_lease("job", "a", first + 1)  # wrong token: no effect
    assert await lease_token(bus, "job", "b", 5) is None

    await bus.release_lease("job", "a", first)
    second = await lease_token(bus, "job", "b", 5)
    assert second is not None and second > first
    await bus.release_lease("job", "a", first)  # a stale release leaves b's lease alone
    assert await lease_token(bus, "job", "c", 5) is None
    assert await bus.renew_lease("job", "b", second, 5) is True


async def test_ping(bus: Bus) -> None:
    await bus.ping()


# Redis only


async def test_redis_unreachable_raises_bus_error_quickly() -> None:
    bus = RedisBus(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
    await bus.start()  # connections are lazy: starting never needs the server
    try:
        started = time.monotonic()
        with pytest.raises(BusError):
            await bus.ping()
        assert time.monotonic() - started < 3
        started = time.monotonic()
        with pytest.raises(BusError):
            await bus.publish("x", b"y")
        with pytest.raises(BusError):
            await bus.get("k")
        with pytest.raises(BusError):
            await bus.subscription().subscribe("x")
        assert time.monotonic() - started < 6
    finally:
        await bus.close()


async def test_redis_subscription_survives_a_restart(
    bus_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The module's logger may be cached by an earlier configure_logging(): replace it.
    log = structlog.testing.CapturingLogger()
    monkeypatch.setattr(redis_subscription, "log", log)
    server = await asyncio.to_thread(RedisServer().start)
    bus = RedisBus(server.url, prefix=bus_prefix, timeout_s=0.5)
    await bus.start()
    sub = bus.subscription()
    queue: asyncio.Queue[Message] = asyncio.Queue()
    task = pump(sub, queue)
    try:
        await sub.subscribe("live")
        await bus.publish("live", b"before")
        assert await next_matching(queue, lambda m: True) == [Message("live", 1, b"before")]

        await asyncio.to_thread(server.stop)
        # The subscription notices and starts backing off: a reconnect has failed.
        await until(
            lambda: "bus.subscription.reconnect_failed" in [c.args[0] for c in log.calls],
            10,
            "a failed reconnect",
        )
        assert not task.done()
        server = await asyncio.to_thread(RedisServer(port=server.port).start)

        # The restarted server has no data (seq starts over) and the subscriber
        # resubscribes on its own schedule: publish until one arrives.
        deadline = time.monotonic() + 30
        seen: list[Message] = []
        while not any(m.channel == "live" for m in seen) and time.monotonic() < deadline:
            await bus.publish("live", b"after")
            with contextlib.suppress(TimeoutError):
                seen.append(await asyncio.wait_for(queue.get(), 0.25))
        # First the marker that says "you missed what was published meanwhile", then live.
        assert seen[0] == Message(RESUBSCRIBED, 0, b"")
        assert [m.data for m in seen[1:]] == [b"after"]
        assert not task.done()
        await bus.ping()
    finally:
        await sub.close()
        await asyncio.wait_for(task, 3)  # ended cleanly: re-raises if the iterator failed
        await bus.close()
        await asyncio.to_thread(server.stop)


def test_create_bus_picks_the_backend() -> None:
    memory = create_bus(None, history_size=7)
    assert isinstance(memory, MemoryBus) and memory.history_size == 7
    shared = create_bus("redis://127.0.0.1:6379/0", prefix="x:", history_size=3, timeout_s=1.5)
    assert isinstance(shared, RedisBus)
    assert (shared.prefix, shared.history_size, shared.timeout_s) == ("x:", 3, 1.5)


async def test_publish_many_keeps_order_and_sequence(bus: Bus) -> None:
    subscription = bus.subscription()
    await subscription.subscribe("a", "b")
    await bus.publish("a", b"first")
    seqs = await bus.publish_many([("a", b"x"), ("b", b"y"), ("a", b"z")])
    assert seqs == [2, 1, 3]
    received = []
    async for message in subscription:
        received.append((message.channel, message.seq, message.data))
        if len(received) == 4:
            break
    await subscription.close()
    expected = [("a", 1, b"first"), ("a", 2, b"x"), ("b", 1, b"y"), ("a", 3, b"z")]
    if isinstance(bus, RedisBus) and bus.cluster:
        # "a" and "b" may live on different shards: only each channel's order is promised.
        received.sort(key=lambda m: m[0])
        expected.sort(key=lambda m: m[0])
    assert received == expected
    assert [m.data for m in await bus.history("a", 0) or []] == [b"first", b"x", b"z"]
    assert await bus.publish_many([]) == []
