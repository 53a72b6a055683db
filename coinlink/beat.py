"""One beat for a worker's periodic work, so that its wake-ups coincide.

An idle worker's periodic jobs (lease renewals, the ingest's second, the hub's upkeep, the
bus subscription's poll, the samplers) each slept their own interval from their own start,
so each woke the process on its own: a wake-up of an idle process costs far more than the
work it does (cold caches; ~0.5-1 ms of CPU for a lease renewal that takes 0.18 ms in a
tight loop). Waking at the next multiple of the interval on the monotonic clock (shared by
every process; the event loop's clock and ``time.monotonic()`` both read it) puts the jobs
whose intervals are multiples of one another on the same wake-ups, in every worker.
"""

from __future__ import annotations

import asyncio
import math

GRAIN_S = 0.001
"""A beat closer than this counts as now, and the next one is taken: uvloop's clock has a
millisecond's grain, and ``k * period`` of an inexact period (0.1, 0.55) lands a hair either
side of the moment a job wakes at, which would otherwise run the job again at once."""


def next_beat(now: float, period_s: float) -> float:
    """The first multiple of ``period_s`` more than :data:`GRAIN_S` after ``now`` (on the
    same clock): at most ``period_s + GRAIN_S`` away."""
    beat = (math.floor(now / period_s) + 1) * period_s
    return beat + period_s if beat - now < GRAIN_S else beat


def until_beat(period_s: float) -> float:
    """Seconds from now to :func:`next_beat` on the event loop's clock."""
    now = asyncio.get_running_loop().time()
    return next_beat(now, period_s) - now


async def sleep_to_beat(period_s: float) -> None:
    """Sleep until :func:`next_beat` of ``period_s``."""
    await asyncio.sleep(until_beat(period_s))
