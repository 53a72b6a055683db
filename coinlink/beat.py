"""One beat for a worker's periodic work, so that its wake-ups coincide.

An idle worker's periodic jobs (lease renewals, the ingest's second, the hub's upkeep, the
bus subscription's poll, the samplers) each slept their own interval from their own start,
so each woke the process on its own: a wake-up of an idle process costs far more than the
work it does (cold caches; ~0.5-1 ms of CPU for a lease renewal that takes 0.18 ms in a
tight loop). Sleeping until the next multiple of the interval on the event loop's clock
(the system's monotonic clock, shared by every process) puts the jobs whose intervals
are multiples of one another on the same wake-ups, in every worker.
"""

from __future__ import annotations

import asyncio


def until_beat(period_s: float) -> float:
    """Seconds from now to the next multiple of ``period_s`` on the event loop's clock
    (never 0: a job that just ran waits for the next one)."""
    now = asyncio.get_running_loop().time()
    return period_s - now % period_s


async def sleep_to_beat(period_s: float) -> None:
    """Sleep until the next multiple of ``period_s`` (at most ``period_s``)."""
    await asyncio.sleep(until_beat(period_s))
