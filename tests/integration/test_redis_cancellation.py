"""Cancelling a task in a Redis call ends it, whatever redis-py does with the cancellation.

redis-py 8 on Python 3.11 swallows most cancellations that land during a command
(``coinlink.redis_calls``). The first test pins that behaviour of the library: when an
upgrade fixes it, it fails, and ``raise_swallowed_cancel`` can go. The others hold our calls
to what a caller relies on: a cancelled task stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from coinlink.bus.redis_bus import RedisBus
from coinlink.ratelimit import Rate, RateLimiter

ROUNDS = 100


async def cancellations_obeyed(call: Callable[[], Awaitable[object]]) -> int:
    """Of ROUNDS tasks looping over ``call``, how many stopped when cancelled mid-loop."""
    obeyed = 0
    for round_ in range(ROUNDS):
        kept_going = False

        async def loop() -> None:
            nonlocal kept_going
            for _ in range(10_000):
                await call()
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    kept_going = True  # the call returned although the task was cancelled
                    return

        task = asyncio.create_task(loop())
        await asyncio.sleep(0.0002 * (round_ % 7))  # land the cancel at varied points
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        obeyed += not kept_going
    return obeyed


async def test_redis_py_itself_swallows_cancellations(redis_url: str) -> None:
    client = Redis.from_url(redis_url, socket_timeout=1.0)
    try:
        obeyed = await cancellations_obeyed(lambda: client.get("coinlink-test:absent"))
    finally:
        await client.aclose()
    assert obeyed < ROUNDS, "redis-py now obeys cancellation: raise_swallowed_cancel can go"


async def test_a_cancelled_bus_call_stops_its_task(redis_url: str, bus_prefix: str) -> None:
    bus = RedisBus(redis_url, prefix=bus_prefix, timeout_s=1.0)
    await bus.start()
    try:
        assert await cancellations_obeyed(lambda: bus.last_seq("probe")) == ROUNDS
        assert await cancellations_obeyed(lambda: bus.get("probe")) == ROUNDS
    finally:
        await bus.close()


async def test_a_cancelled_subscription_read_stops_its_task(
    redis_url: str, bus_prefix: str
) -> None:
    bus = RedisBus(redis_url, prefix=bus_prefix, timeout_s=1.0)
    await bus.start()
    subscription = bus.subscription()
    try:
        await subscription.subscribe("probe")

        async def read() -> None:
            async with asyncio.timeout(0.001):
                await anext(subscription)

        async def read_until_quiet() -> None:
            with contextlib.suppress(TimeoutError):
                await read()

        assert await cancellations_obeyed(read_until_quiet) == ROUNDS
    finally:
        await subscription.close()
        await bus.close()


async def test_a_cancelled_limiter_call_stops_its_task(redis_url: str, bus_prefix: str) -> None:
    limiter = RateLimiter(redis_url, prefix=bus_prefix, timeout_s=1.0)
    await limiter.start()
    rate = Rate(1_000_000, 60)
    try:
        # A refusal would be cached locally; a huge budget makes every hit a Redis call
        # once its slice is spent, and "user" keys differ per call to skip the slices.
        counter = iter(range(10**9))
        obeyed = await cancellations_obeyed(lambda: limiter.hit("user", rate, str(next(counter))))
        assert obeyed == ROUNDS
    finally:
        await limiter.close()


async def test_a_cancelled_publish_many_gives_its_connection_back(
    redis_url: str, bus_prefix: str
) -> None:
    """A leader stepping down cancels the ingest mid-publish: the pipeline must not be left
    holding its connection (redis-py reports such a pipeline as an error when collected,
    which fails this test through the suite's log guard)."""
    bus = RedisBus(redis_url, prefix=bus_prefix, timeout_s=1.0)
    await bus.start()
    items = [(f"probe:{n}", b"{}") for n in range(20)]
    try:
        assert await cancellations_obeyed(lambda: bus.publish_many(items)) == ROUNDS
        gc.collect()
        await asyncio.sleep(0)  # the loop's exception handler runs the reports
    finally:
        await bus.close()
