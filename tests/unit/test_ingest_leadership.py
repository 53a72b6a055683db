"""The ingest leader steps down in time, hands the lease over on stop, and never dies."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from coinlink.bus import MemoryBus
from coinlink.market.ingest import LEASE, Ingest
from coinlink.market.providers.base import Provider
from coinlink.market.view import MarketView
from tests.support.services import until


class SlowRenewals(MemoryBus):
    """A bus whose lease renewals hang, as a Redis on the far side of a bad link would."""

    async def renew_lease(self, name: str, holder: str, token: int, ttl_s: float) -> bool:
        await asyncio.Event().wait()  # never answers
        return True


async def test_a_leader_whose_renewal_hangs_stops_before_its_lease_runs_out() -> None:
    bus = SlowRenewals()
    ingest = Ingest(bus, ["BTC-USD"], lambda: None, lease_ttl_s=1.5)
    token = await bus.acquire_lease(LEASE, ingest.holder, 1.5)
    assert token is not None
    started = time.monotonic()
    await asyncio.wait_for(ingest._keep_lease(token, started + 1.5), timeout=5)
    # It gave up inside its own lease: nobody else could have led yet.
    assert time.monotonic() - started < 1.5


async def test_a_leader_that_loses_its_lease_stops() -> None:
    bus = MemoryBus()
    ingest = Ingest(bus, ["BTC-USD"], lambda: None, lease_ttl_s=1.2)
    token = await bus.acquire_lease(LEASE, ingest.holder, 1.2)
    assert token is not None
    await bus.release_lease(LEASE, ingest.holder, token)
    assert await bus.acquire_lease(LEASE, "someone else", 1.2) is not None
    await asyncio.wait_for(ingest._keep_lease(token, time.monotonic() + 1.2), timeout=3)


async def test_stopping_hands_the_lease_over_at_once() -> None:
    bus = MemoryBus()
    ingest = Ingest(bus, ["BTC-USD"], lambda: None, lease_ttl_s=30)
    task = asyncio.create_task(ingest.run())
    await until(lambda: ingest.leading, 10, "the lead")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # Released, not left to expire in 30 s: a rolling deploy loses no ingest time.
    assert await bus.acquire_lease(LEASE, "next instance", 30) is not None


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
        # With a growing pause between reigns (lease/5 doubling, at least its upper half),
        # not thousands a second.
        assert attempts[1] - attempts[0] >= 0.05
        assert attempts[2] - attempts[1] >= 0.1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


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
