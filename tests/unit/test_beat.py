"""The shared beat: periodic jobs of different intervals wake together."""

from __future__ import annotations

import asyncio

import pytest

from coinlink.beat import sleep_to_beat, until_beat


async def test_until_beat_reaches_the_next_multiple_of_the_period() -> None:
    loop = asyncio.get_running_loop()
    for period in (0.05, 0.5, 1.0, 7.5):
        now = loop.time()
        wait = until_beat(period)
        assert 0 < wait <= period
        assert (now + wait) / period == pytest.approx(round((now + wait) / period), abs=1e-3)


async def test_jobs_of_related_periods_wake_on_the_same_beats() -> None:
    loop = asyncio.get_running_loop()
    woke: dict[float, list[float]] = {0.02: [], 0.04: []}

    async def job(period: float) -> None:
        for _ in range(6 if period == 0.02 else 3):
            await sleep_to_beat(period)
            woke[period].append(loop.time())

    await asyncio.gather(job(0.02), job(0.04))
    # Every wake-up of the slower job is one of the faster job's (the loop's clock has a
    # millisecond's grain).
    for at in woke[0.04]:
        assert min(abs(at - other) for other in woke[0.02]) < 0.002
