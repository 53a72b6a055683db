"""The shared beat: periodic jobs of different intervals wake together."""

from __future__ import annotations

import asyncio

import pytest

from coinlink.beat import GRAIN_S, next_beat, sleep_to_beat


@pytest.mark.parametrize("period", [0.05, 0.1, 0.5, 0.55, 1.0, 1.05, 7.5])
@pytest.mark.parametrize("now", [0.0, 3.2, 1234567.2, 9876543.21, 86400.0 * 30 + 0.7])
def test_next_beat_is_the_next_multiple_of_the_period(now: float, period: float) -> None:
    beat = next_beat(now, period)
    assert GRAIN_S <= beat - now <= period + GRAIN_S
    assert beat / period == pytest.approx(round(beat / period), rel=0, abs=1e-6)


@pytest.mark.parametrize("period", [0.05, 0.1, 0.55, 1.05])
def test_a_job_woken_on_its_beat_waits_a_whole_period(period: float) -> None:
    # uvloop wakes a job on the beat's millisecond; k * period may fall a hair after it.
    for k in (1234567, 9876543, 31):
        woke = round(k * period, 3)
        assert next_beat(woke, period) - woke == pytest.approx(period, abs=GRAIN_S)


async def test_jobs_started_apart_wake_on_the_same_beats() -> None:
    loop = asyncio.get_running_loop()
    woke: dict[float, list[float]] = {0.02: [], 0.04: []}

    async def job(period: float, start_after_s: float, beats: int) -> None:
        await asyncio.sleep(start_after_s)  # out of phase with the other job
        for _ in range(beats):
            await sleep_to_beat(period)
            woke[period].append(loop.time())

    await asyncio.gather(job(0.02, 0.0, 8), job(0.04, 0.013, 3))
    # Every wake-up of the slower job falls on a beat of the faster one: the same time up
    # to how late the loop ran them (a plain sleep would keep the 13 ms offset).
    for at in woke[0.04]:
        assert min(abs(at - other) for other in woke[0.02]) < 0.005
