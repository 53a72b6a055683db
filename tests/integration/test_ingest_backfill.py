"""A new leader fills the candle history its provider has and the database lacks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from decimal import Decimal
from itertools import pairwise

from tortoise import Tortoise

from coinlink.bus import MemoryBus
from coinlink.db import apply_migrations, tortoise_config
from coinlink.market.ingest import Ingest
from coinlink.market.providers.base import OHLCVRow, Provider, ProviderError
from coinlink.market.types import INTERVALS, Tick
from coinlink.wire import now_ms
from models.market import CandleRow
from tests.support.services import until

MINUTE = 60_000


class HistoryOnly(Provider):
    """An exchange with REST history and a silent live feed; records what it was asked."""

    name = "history"

    def __init__(self, fail_for: str = "") -> None:
        super().__init__()
        self.asked: list[tuple[str, str, int, int]] = []
        self.fail_for = fail_for

    async def ticks(self) -> AsyncGenerator[Tick, None]:
        await asyncio.Event().wait()
        yield  # type: ignore[misc]  # never reached: an async generator that never yields

    async def backfill(
        self, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> list[OHLCVRow]:
        self.asked.append((symbol, interval, start_ms, end_ms))
        if symbol == self.fail_for:
            raise ProviderError("exchange said 500")
        if interval != "1m":
            return []
        length = INTERVALS[interval]
        first = start_ms - start_ms % length
        return [
            (t, Decimal(1), Decimal(2), Decimal("0.5"), Decimal("1.5"), Decimal(10), 3)
            for t in range(first, end_ms + 1, length)
        ]


async def backfill_once(provider: HistoryOnly, hours: float) -> None:
    ingest = Ingest(MemoryBus(), ["BTC-USD", "ETH-USD"], lambda: provider, backfill_hours=hours)
    await ingest._backfill(provider)  # returns once every symbol and interval is stored
    assert len(provider.asked) == 2 * len(INTERVALS)


def test_backfill_stores_closed_history_once(fresh_pg_url: str) -> None:
    async def scenario() -> tuple[list[int], list[int], list[tuple[str, str, int, int]]]:
        await apply_migrations(fresh_pg_url)
        await Tortoise.init(config=tortoise_config(fresh_pg_url))
        try:
            first = HistoryOnly(fail_for="ETH-USD")
            await backfill_once(first, hours=1)
            stored = (
                await CandleRow.filter(symbol="BTC-USD", interval="1m")
                .order_by("open_time")
                .values_list("open_time", flat=True)
            )
            again = HistoryOnly()
            await backfill_once(again, hours=1)
            after = (
                await CandleRow.filter(symbol="BTC-USD", interval="1m")
                .order_by("open_time")
                .values_list("open_time", flat=True)
            )
            return list(stored), list(after), again.asked
        finally:
            await Tortoise.close_connections()

    stored, after, asked_again = asyncio.run(scenario())
    now = now_ms()
    # About an hour of closed minutes; the minute still open is not stored.
    assert 59 <= len(stored) <= 61
    assert stored[-1] + MINUTE <= now
    assert all(b - a == MINUTE for a, b in pairwise(stored))
    # The second leader asks only for what is newer than the database's newest candle,
    # and the failing symbol of the first run did not stop the others.
    btc_1m = next(a for a in asked_again if a[:2] == ("BTC-USD", "1m"))
    assert btc_1m[2] == stored[-1] + MINUTE
    assert after[: len(stored)] == stored and len(after) - len(stored) <= 1


def test_new_leader_stores_candles_the_old_one_closed_but_never_wrote(fresh_pg_url: str) -> None:
    """The bus history holds what the dead leader published; the database may lag it."""
    import orjson

    from coinlink.market.pipeline import Pipeline
    from coinlink.market.tick_validator import TickValidator
    from coinlink.market.types import Candle, candle_dict

    base = (now_ms() // MINUTE - 10) * MINUTE
    one = Decimal(1)
    published = [
        Candle(
            "BTC-USD",
            "1m",
            base + m * MINUTE,
            base + (m + 1) * MINUTE - 1,
            one,
            one,
            one,
            one,
            one,
            1,
            closed=m < 2,
        )
        for m in range(3)
    ]

    async def scenario() -> tuple[list[int], int]:
        await apply_migrations(fresh_pg_url)
        await Tortoise.init(config=tortoise_config(fresh_pg_url))
        try:
            bus = MemoryBus()
            await bus.publish_many(
                [("candles:BTC-USD:1m", orjson.dumps(candle_dict(c))) for c in published]
            )
            ingest = Ingest(bus, ["BTC-USD"], lambda: None)
            pipeline = Pipeline(["BTC-USD"], TickValidator(max_age_ms=3_600_000))
            await ingest._resume_candles(pipeline)
            await ingest._store_now()  # the reign's first batch write
            stored = await CandleRow.filter(symbol="BTC-USD").values_list("open_time", flat=True)
            # The open one was resumed: a tick of its minute extends it, not a new candle.
            pipeline.apply(Tick("BTC-USD", Decimal(2), Decimal(1), base + 2 * MINUTE + 10))
            current = pipeline.candles["BTC-USD"].current("1m")
            assert current is not None
            return sorted(stored), current.trades
        finally:
            await Tortoise.close_connections()

    stored, trades = asyncio.run(scenario())
    assert stored == [base, base + MINUTE]
    assert trades == 2


def test_provider_counters_reach_prometheus() -> None:
    from prometheus_client import REGISTRY

    provider = HistoryOnly()

    def value() -> float:
        sample = REGISTRY.get_sample_value(
            "ingest_provider_events_total", {"provider": "history", "kind": "reconnects"}
        )
        return sample or 0.0

    before = value()

    async def scenario() -> None:
        ingest = Ingest(MemoryBus(), ["BTC-USD"], lambda: provider)
        task = asyncio.create_task(ingest._export_stats(provider))
        try:
            provider.stats["reconnects"] += 3
            await until(lambda: value() - before == 3, 10, "the first three exported")
            provider.stats["reconnects"] += 2  # only what is new is added next time
            await until(lambda: value() - before == 5, 10, "the next two exported")
        finally:
            task.cancel()

    asyncio.run(scenario())
