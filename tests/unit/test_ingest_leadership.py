"""The ingest leader steps down in time, hands the lease over on stop, and never dies."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable
from decimal import Decimal

import orjson
import pytest

from coinlink import channels
from coinlink.bus import LeaseTry, MemoryBus
from coinlink.market import admin_ticks
from coinlink.market import ingest as ingest_module
from coinlink.market.ingest import LEASE, Ingest
from coinlink.market.providers.base import Provider
from coinlink.market.types import Tick
from coinlink.market.view import MarketView
from coinlink.wire import now_ms
from tests.support.buses import FaultyBus
from tests.support.services import until

TICKER = "ticker:BTC-USD"


class SlowRenewals(MemoryBus):
    """A bus whose lease renewals hang, as a Redis on the far side of a bad link would."""

    async def renew_lease(self, name: str, holder: str, token: int, ttl_s: float) -> bool:
        await asyncio.Event().wait()  # never answers
        return True


async def test_a_leader_whose_renewal_hangs_stops_before_its_lease_runs_out() -> None:
    bus = SlowRenewals()
    ingest = Ingest(bus, ["BTC-USD"], lambda: None, lease_ttl_s=1.5)
    token = (await bus.acquire_lease(LEASE, ingest.holder, 1.5)).token
    assert token is not None
    started = time.monotonic()
    await asyncio.wait_for(ingest._keep_lease(token, started + 1.5), timeout=5)
    # It gave up inside its own lease: nobody else could have led yet.
    assert time.monotonic() - started < 1.5


async def test_a_leader_that_loses_its_lease_stops() -> None:
    bus = MemoryBus()
    ingest = Ingest(bus, ["BTC-USD"], lambda: None, lease_ttl_s=1.2)
    token = (await bus.acquire_lease(LEASE, ingest.holder, 1.2)).token
    assert token is not None
    await bus.release_lease(LEASE, ingest.holder, token)
    assert (await bus.acquire_lease(LEASE, "someone else", 1.2)).token is not None
    await asyncio.wait_for(ingest._keep_lease(token, time.monotonic() + 1.2), timeout=3)


async def test_stopping_hands_the_lease_over_at_once_and_for_good() -> None:
    bus = MemoryBus()
    ingest = Ingest(bus, ["BTC-USD"], lambda: None, lease_ttl_s=30)
    task = asyncio.create_task(ingest.run())
    await until(lambda: ingest.leading, 10, "the lead")
    await asyncio.wait_for(ingest.stop(), timeout=5)
    # Released, not left to expire in 30 s: a rolling deploy loses no ingest time.
    assert (await bus.acquire_lease(LEASE, "next instance", 30)).token is not None
    # Run has ended by itself, and never takes the lease again.
    assert task.done() and not task.cancelled() and not ingest.leading


class CountedTries(MemoryBus):
    def __init__(self) -> None:
        super().__init__()
        self.tries: Counter[str] = Counter()

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> LeaseTry:
        self.tries[holder] += 1
        return await super().acquire_lease(name, holder, ttl_s)


async def test_a_released_lease_is_taken_at_once_on_its_announcement_not_at_the_next_poll() -> None:
    """A rolling restart's handover: the follower hears of the release from the bus (in a
    server, through its hub) instead of waiting for its next try, when the grant runs out."""
    bus = CountedTries()
    first = Ingest(bus, ["BTC-USD"], lambda: None, lease_ttl_s=60)  # grants of 60 s
    second = Ingest(bus, ["BTC-USD"], lambda: None, lease_ttl_s=60)
    announcements = bus.subscription()
    await announcements.subscribe(channels.LEASES_RELEASED)

    async def forward() -> None:
        async for message in announcements:
            second.turns.released(message.data)

    tasks = [asyncio.create_task(t) for t in (forward(), first.run())]
    try:
        await until(lambda: first.leading, 10, "the first lead")
        tasks.append(asyncio.create_task(second.run()))
        await until(lambda: bus.tries[second.holder], 10, "the second's first try")  # it waits
        await asyncio.wait_for(first.stop(), timeout=5)
        await until(lambda: second.leading, 5, "the second lead, well before its next try")
        await asyncio.wait_for(second.stop(), timeout=5)
    finally:
        await announcements.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_dead_holders_lease_is_taken_as_its_grant_runs_out_with_one_try_before() -> None:
    """No polling: the refused try says when the grant ends, and the next try comes then."""
    bus = CountedTries()
    assert (await bus.acquire_lease(LEASE, "a holder that died", 1.0)).token is not None
    follower = Ingest(bus, ["BTC-USD"], lambda: None, lease_ttl_s=60)  # its own grants: 60 s
    started = time.monotonic()
    task = asyncio.create_task(follower.run())
    try:
        await until(lambda: follower.leading, 10, "the lead")
        assert time.monotonic() - started < 5  # a quarter of its lease would be 15 s
        # Refused once, then taken (a timer may fire a hair early: one more try, at most).
        assert 2 <= bus.tries[follower.holder] <= 3
        await asyncio.wait_for(follower.stop(), timeout=5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_cancelling_a_leader_still_releases_its_lease() -> None:
    """The last resort, for a reign stuck past its grace."""
    bus = MemoryBus()
    ingest = Ingest(bus, ["BTC-USD"], lambda: None, lease_ttl_s=30)
    task = asyncio.create_task(ingest.run())
    await until(lambda: ingest.leading, 10, "the lead")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert (await bus.acquire_lease(LEASE, "next instance", 30)).token is not None


class Burst(Provider):
    """Ticks in two bursts, the second read while the first batch's publish is held up;
    after it, the provider asks the leader to stop."""

    def __init__(self, ingest: Callable[[], Ingest], bus: FaultyBus, prices: list[str]) -> None:
        super().__init__()
        self.ingest = ingest
        self.bus = bus
        self.prices = prices
        self.resumed: dict[str, Decimal] = {}
        self.stopping: asyncio.Task[None] | None = None

    def resume(self, prices: dict[str, Decimal]) -> None:
        self.resumed = prices

    async def ticks(self) -> AsyncGenerator[Tick, None]:
        half = len(self.prices) // 2
        for i, price in enumerate(self.prices):
            if i == half:
                await until(lambda: self.bus.waiting[TICKER], 10, "the first batch held")
            yield Tick("BTC-USD", Decimal(price), Decimal(1), now_ms())
        # The second burst waits in the leader's queue, unprocessed: stop now.
        self.stopping = asyncio.create_task(self.ingest().stop())
        await asyncio.Event().wait()


async def test_a_stopping_leader_publishes_every_tick_it_read_and_the_next_resumes() -> None:
    bus = FaultyBus()
    bus.hold(TICKER)  # a slow round trip: the leader is mid-publish when asked to stop
    first = Burst(lambda: leader, bus, [str(100 + i) for i in range(50)])
    leader = Ingest(bus, ["BTC-USD"], lambda: first, lease_ttl_s=30)
    task = asyncio.create_task(leader.run())
    await until(lambda: first.stopping is not None, 10, "the stop")
    bus.release(TICKER)
    assert first.stopping is not None
    await asyncio.wait_for(first.stopping, timeout=5)
    assert task.done() and not task.cancelled()
    published = [orjson.loads(m.data)["price"] for m in await bus.history(TICKER) or []]
    assert published == ["124", "149"]  # each burst's newest price, nothing cut off

    # The next leader's provider starts from the last published price.
    second = Burst(lambda: successor, bus, [])
    successor = Ingest(bus, ["BTC-USD"], lambda: second, lease_ttl_s=30)
    task = asyncio.create_task(successor.run())
    await until(lambda: second.stopping is not None, 10, "the successor's provider")
    assert second.resumed == {"BTC-USD": Decimal("149")}
    await asyncio.wait_for(successor.stop(), timeout=5)
    await task


@pytest.mark.expected_errors("ingest_reign_failed")
async def test_a_failing_reign_is_retried_not_fatal() -> None:
    attempts = []

    def provider() -> Provider | None:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise ConnectionError("exchange unreachable")
        return None

    bus = MemoryBus()
    ingest = Ingest(bus, ["BTC-USD"], provider, lease_ttl_s=0.5)
    task = asyncio.create_task(ingest.run())
    try:
        await until(lambda: len(attempts) >= 3 and ingest.leading, 20, "a third, working reign")
        # With a growing pause between reigns (lease/10 doubling, at least its upper half),
        # not thousands a second.
        assert attempts[1] - attempts[0] >= 0.025
        assert attempts[2] - attempts[1] >= 0.05
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_tickers_batch_goes_out_when_it_changes_not_every_quiet_second() -> None:
    bus = MemoryBus()
    ingest = Ingest(bus, ["BTC-USD"], lambda: None, lease_ttl_s=30)
    task = asyncio.create_task(ingest.run())

    async def beat() -> int:
        raw = await bus.get(channels.INGEST_HEARTBEAT_KEY)
        return 0 if raw is None else int(orjson.loads(raw)["at"])

    try:
        first = await until(beat, 10, "the first heartbeat")
        assert await bus.last_seq(channels.TICKERS) == 1  # the empty batch, once
        await until(lambda: beat_after(beat, first + 2_000), 10, "two more quiet seconds")
        assert await bus.last_seq(channels.TICKERS) == 1  # nothing new: nothing sent
        tick = admin_ticks.message("BTC-USD", Decimal(100), Decimal(1), now_ms())
        await bus.publish(channels.ADMIN_TICKS, orjson.dumps(tick))
        newest = await until(
            lambda: newest_tickers(bus), 10, "a batch with the tick, within a second or so"
        )
        assert [t["price"] for t in newest] == ["100"]
        await asyncio.wait_for(ingest.stop(), timeout=5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_unchanged_tickers_batch_goes_out_again_after_the_refresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A channel a lost write left behind (a failover, a deposed leader) catches up."""
    monkeypatch.setattr(ingest_module, "TICKERS_REFRESH_S", 2.0)
    bus = MemoryBus()
    ingest = Ingest(bus, ["BTC-USD"], lambda: None, lease_ttl_s=30)
    task = asyncio.create_task(ingest.run())
    try:
        await until(lambda: bus.last_seq(channels.TICKERS), 10, "the first batch")
        first = time.monotonic()
        await until(lambda: seq_at_least(bus, 2), 10, "the same batch again")
        assert time.monotonic() - first >= 1.5  # after the refresh, not the next second
        assert [m.data for m in await bus.history(channels.TICKERS, 0) or []] == [b"[]", b"[]"]
        await asyncio.wait_for(ingest.stop(), timeout=5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def seq_at_least(bus: MemoryBus, seq: int) -> bool:
    return await bus.last_seq(channels.TICKERS) >= seq


async def beat_after(beat: Callable[[], Awaitable[int]], at: int) -> bool:
    return await beat() >= at


async def newest_tickers(bus: MemoryBus) -> list[dict[str, str]]:
    history = await bus.history(channels.TICKERS, 0) or []
    return list(orjson.loads(history[-1].data)) if history else []


async def test_tickers_turn_stale_after_the_configured_silence() -> None:
    view = MarketView(["BTC-USD"], staleness_s=30)
    view.apply("ticker:BTC-USD", 7, orjson.dumps({"symbol": "BTC-USD", "price": "1", "ts": 1_000}))
    assert view.ticker("BTC-USD", 1_000 + 30_000)["stale"] is False
    assert view.ticker("BTC-USD", 1_000 + 30_001)["stale"] is True
    assert view.ticker("BTC-USD", 2_000)["seq"] == 7


async def test_a_stray_message_in_candle_history_does_not_stop_a_take_over() -> None:
    """A new leader resumes candles from the bus history; what is not a candle is skipped."""
    bus = MemoryBus()
    await bus.start()
    good = {
        "symbol": "BTC-USD",
        "interval": "1m",
        "open_time": 60_000,
        "close_time": 119_999,
        "open": "1",
        "high": "2",
        "low": "1",
        "close": "2",
        "volume": "3",
        "trades": 2,
        "closed": False,
    }
    await bus.publish("candles:BTC-USD:1m", b'{"not": "a candle"}')
    await bus.publish("candles:BTC-USD:1m", orjson.dumps(good))
    ingest = Ingest(bus, ["BTC-USD"], lambda: None, lease_ttl_s=1.0)
    task = asyncio.create_task(ingest.run())
    try:
        resumed = await until(
            lambda: ingest.pipeline and ingest.pipeline.candles["BTC-USD"].current("1m"),
            10,
            "the resumed candle",
        )
        assert resumed is not None and resumed.open_time == 60_000 and ingest.leading
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
