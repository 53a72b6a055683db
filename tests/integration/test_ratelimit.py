"""The Redis GCRA against a real Redis: bursts, shared budgets, window edges, outages.

And the budget slices: Redis calls are counted exactly, by wrapping the script call
(``script_calls``) and, on a Redis of the test's own, by ``INFO commandstats``.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio
import structlog
from prometheus_client import REGISTRY

from coinlink.ratelimit import Decision, Rate, RateLimiter
from coinlink.ratelimit import limiter as limiter_module
from coinlink.redis_calls import connect
from tests.support.script_calls import ScriptCalls
from tests.support.services import RedisServer, until


@pytest.fixture(params=["redis_url", "redis_cluster_url"], ids=["redis", "cluster"])
def shared_url(request: pytest.FixtureRequest) -> str:
    """What the limiters share: one Redis, or a Redis Cluster (the same GCRA script)."""
    return str(request.getfixturevalue(request.param))


@pytest.fixture
async def limiter(shared_url: str, bus_prefix: str) -> AsyncIterator[RateLimiter]:
    limiter = RateLimiter(shared_url, prefix=bus_prefix)
    await limiter.start()
    yield limiter
    await limiter.close()


@pytest.fixture
def captured_log(monkeypatch: pytest.MonkeyPatch) -> structlog.testing.CapturingLogger:
    # The module's logger may already be cached by an earlier configure_logging(): replace it.
    capturing = structlog.testing.CapturingLogger()
    monkeypatch.setattr(limiter_module, "log", capturing)
    return capturing


@pytest.fixture
def throwaway_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
async def pair(shared_url: str, bus_prefix: str) -> AsyncIterator[tuple[RateLimiter, RateLimiter]]:
    """Two limiters on one Redis and prefix: two processes of the app."""
    first = RateLimiter(shared_url, prefix=bus_prefix)
    second = RateLimiter(shared_url, prefix=bus_prefix)
    await first.start()
    await second.start()
    yield first, second
    await first.close()
    await second.close()


def fallback_total() -> float:
    return REGISTRY.get_sample_value("ratelimit_fallback_total") or 0.0


def events(log: structlog.testing.CapturingLogger) -> list[str]:
    return [str(call.args[0]) for call in log.calls]


async def test_burst_then_refused_with_retry_after(
    limiter: RateLimiter, shared_url: str, bus_prefix: str
) -> None:
    rate = Rate(5, 60)
    decisions = [await limiter.hit("anonymous", rate, "203.0.113.7") for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    refused = decisions[-1]
    # One request per 12 s; the burst took microseconds.
    assert 11.0 < refused.retry_after_s <= 12.0
    assert math.ceil(refused.retry_after_s) == 12  # the integer Retry-After
    assert 59.0 < refused.reset_s <= 60.0
    assert not limiter.redis_down
    # One key per client and policy, hashed (no address in Redis), expiring with the period.
    client = connect(shared_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{bus_prefix}*")]
        assert len(keys) == 1
        key = keys[0].decode() if isinstance(keys[0], bytes) else keys[0]
        assert key.startswith(f"{bus_prefix}anonymous:")
        assert "203.0.113.7" not in key
        assert 0 < await client.pttl(key) <= 60_000
    finally:
        await client.aclose()


async def test_two_instances_share_one_budget(redis_url: str, bus_prefix: str) -> None:
    first = RateLimiter(redis_url, prefix=bus_prefix)
    second = RateLimiter(redis_url, prefix=bus_prefix)
    await first.start()
    await second.start()
    try:
        rate = Rate(5, 60)
        assert all([(await first.hit("user", rate, "u1")).allowed for _ in range(3)])
        last = [await second.hit("user", rate, "u1") for _ in range(3)]
        assert [d.allowed for d in last] == [True, True, False]
        assert not (await first.hit("user", rate, "u1")).allowed
        # Another key is untouched.
        assert (await second.hit("user", rate, "u2")).remaining == 4
    finally:
        await first.close()
        await second.close()


async def just_before_a_window_edge(period_s: float = 0.5, ahead_s: float = 0.03) -> float:
    """Sleep until ``ahead_s`` before the next instant a fixed window of ``period_s``
    (aligned on the clock) would roll over, and return that instant. The clock is the
    subject of these tests: the sleep places the bursts around that instant."""
    edge = (math.floor(time.time() / period_s) + 1) * period_s
    if edge - ahead_s - time.time() < 0.02:  # too close to get there in time: the next one
        edge += period_s
    await asyncio.sleep(edge - ahead_s - time.time())
    return edge


async def test_no_double_burst_at_a_window_edge(limiter: RateLimiter) -> None:
    rate = Rate(10, 0.5)  # one per 50 ms, bursts of 10
    interval = rate.interval_us / 1_000_000
    edge = await just_before_a_window_edge()
    started = time.monotonic()
    first = [await limiter.hit("p", rate, "edge") for _ in range(10)]
    await asyncio.sleep(max(0.0, edge + 0.01 - time.time()))
    second = [await limiter.hit("p", rate, "edge") for _ in range(10)]
    elapsed = time.monotonic() - started
    assert all(d.allowed for d in first)
    # A fixed window would allow all ten again; GCRA only what the elapsed time paid for
    # (a bound that holds however slow the machine made the two bursts).
    assert sum(d.allowed for d in second) <= math.floor(elapsed / interval) + 1


async def allowed(limiter: RateLimiter, rate: Rate, key: str) -> bool:
    return (await limiter.hit("p", rate, key)).allowed


async def test_limiter_refills_at_the_rate(limiter: RateLimiter) -> None:
    rate = Rate(4, 2.0)  # one per 500 ms: the checks below have that much slack
    assert all([(await limiter.hit("p", rate, "refill")).allowed for _ in range(4)])
    asked = time.monotonic()
    refused = await limiter.hit("p", rate, "refill")
    assert not refused.allowed
    # Polled (a refused client's hits are answered in process): allowed again once its
    # retry-after has passed, not before...
    await until(lambda: allowed(limiter, rate, "refill"), 10, "the refill")
    assert time.monotonic() - asked >= refused.retry_after_s
    # ...and with one unit, not the burst.
    assert not await allowed(limiter, rate, "refill")


async def test_redis_down_falls_back_and_recovers(
    throwaway_redis: RedisServer,
    captured_log: structlog.testing.CapturingLogger,
    script_calls: ScriptCalls,
) -> None:
    limiter = RateLimiter(throwaway_redis.url, prefix="rl:", retry_interval_s=0.3)
    await limiter.start()
    rate = Rate(3, 60)
    try:
        assert (await limiter.hit("login_ip", rate, "203.0.113.7")).allowed
        assert not limiter.redis_down

        await asyncio.to_thread(throwaway_redis.stop)
        before = fallback_total()
        down_since = time.monotonic()
        decisions = []
        for _ in range(5):
            started = time.monotonic()
            decisions.append(await limiter.hit("login_ip", rate, "203.0.113.7"))
            # Never stuck on the dead server (bounded by the 0.25 s timeout; the rest of
            # the margin is for a loaded machine).
            assert time.monotonic() - started < 3
        # Still limited: the local limiter has its own budget of three.
        assert [d.allowed for d in decisions] == [True, True, True, False, False]
        assert limiter.redis_down
        assert fallback_total() - before == 5
        assert events(captured_log).count("ratelimit_fallback") == 1
        assert captured_log.calls[0].method_name == "warning"

        # While the breaker is open, Redis is not tried: one probe per retry interval at
        # most (none, unless the machine was slow), not a call per request.
        calls = script_calls.count
        for _ in range(50):
            await limiter.hit("login_ip", rate, "198.51.100.1")
        assert script_calls.count - calls <= (time.monotonic() - down_since) // 0.3
        assert events(captured_log).count("ratelimit_fallback") == 1

        await asyncio.to_thread(throwaway_redis.start)  # same port

        async def recovered() -> bool:
            await limiter.hit("anonymous", rate, "probe")
            return not limiter.redis_down

        await until(recovered, 30, "the limiter back on Redis")
        assert events(captured_log).count("ratelimit_recovered") == 1
        # The Redis path again: a fresh Redis has a fresh budget for this key, and the
        # decision lands there.
        assert (await limiter.hit("login_ip", rate, "203.0.113.7")).remaining == 2
        client = redis.asyncio.Redis.from_url(throwaway_redis.url)
        try:
            assert await client.keys("rl:login_ip:*")
        finally:
            await client.aclose()
        assert events(captured_log).count("ratelimit_fallback") == 1
    finally:
        await limiter.close()


async def test_unreachable_redis_from_the_start(
    captured_log: structlog.testing.CapturingLogger,
) -> None:
    server = RedisServer()  # a free port with nothing listening
    limiter = RateLimiter(server.url, timeout_s=0.25)
    await limiter.start()
    try:
        started = time.monotonic()
        decision = await limiter.hit("register", Rate(1, 3600), "203.0.113.7")
        assert time.monotonic() - started < 3  # refused at once; the margin is for load
        assert decision.allowed
        assert not (await limiter.hit("register", Rate(1, 3600), "203.0.113.7")).allowed
        assert events(captured_log) == ["ratelimit_fallback"]
    finally:
        await limiter.close()


async def test_hung_redis_is_cut_off_by_the_timeout(
    captured_log: structlog.testing.CapturingLogger,
) -> None:
    """A peer that accepts connections but never answers: bounded by timeout_s."""

    done = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limiter = RateLimiter(f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
    await limiter.start()
    try:
        started = time.monotonic()
        decision = await limiter.hit("anonymous", Rate(5, 60), "203.0.113.7")
        # Without the 0.2 s deadline this would never return; the margin is for load.
        assert time.monotonic() - started < 3
        assert decision.allowed and decision.remaining == 4
        assert limiter.redis_down
    finally:
        await limiter.close()
        done.set()
        server.close()
        await server.wait_closed()


# ---------------------------------------------------------------------------------------
# Budget slices and cached refusals


async def test_a_steady_client_rarely_calls_redis(
    throwaway_redis: RedisServer, script_calls: ScriptCalls
) -> None:
    """1000 requests: 25 calls. Counted by Redis itself, on a Redis of the test's own."""
    limiter = RateLimiter(throwaway_redis.url, prefix="rl:")
    await limiter.start()
    client = redis.asyncio.Redis.from_url(throwaway_redis.url)
    try:
        rate = Rate(1_019, 3_600)  # slices of up to 50 (a twentieth); 1,000 fit the burst
        assert (await limiter.hit("user", rate, "warm-up")).allowed  # loads the script
        await client.config_resetstat()
        script_calls.count = 0
        started = time.monotonic()
        decisions = [await limiter.hit("user", rate, "steady") for _ in range(1_000)]
        elapsed_s = time.monotonic() - started
        assert all(d.allowed for d in decisions)
        # Ramping up: 1 + 2 + 4 + 8 + 16 + 32 = 63 in 6 calls; then 937 in slices of 50: 19.
        evalsha = (await client.info("commandstats"))["cmdstat_evalsha"]["calls"]
        assert evalsha == script_calls.count == 25
        # The headers still count down by one per request; the budget refills one unit per
        # T = 3.6 ms, so over the run they may rise by what that time refilled, no more.
        remaining = [d.remaining for d in decisions]
        assert remaining[0] == rate.limit - 1
        steps = [b - a for a, b in itertools.pairwise(remaining)]
        assert min(steps) >= -1
        assert sum(step for step in steps if step > 0) <= elapsed_s / rate.period_s * rate.limit + 1
    finally:
        await client.aclose()
        await limiter.close()


@pytest.mark.parametrize("limit", [600, 610])
async def test_one_instance_admits_exactly_the_limit_in_a_burst(
    limiter: RateLimiter, script_calls: ScriptCalls, limit: int
) -> None:
    """Exact whether or not the slices divide the limit: when a slice no longer fits, Redis
    grants one unit at a time, so the last units of the budget are decided one by one."""
    rate = Rate(limit, 3_600)  # slices of up to 30; no refill during the test (T = 6 s)
    decisions = [await limiter.hit("user", rate, "burst") for _ in range(limit + 100)]
    admitted = [d for d in decisions if d.allowed]
    assert len(admitted) == limit
    assert [d.remaining for d in admitted] == list(range(limit - 1, -1, -1))
    assert not any(d.allowed for d in decisions[limit:])
    assert script_calls.count < 50  # instead of limit + 100


async def test_two_instances_admit_at_most_the_limit_plus_their_slices(
    pair: tuple[RateLimiter, RateLimiter], script_calls: ScriptCalls
) -> None:
    rate = Rate(600, 3_600)
    n = rate.slice_units
    rng = random.Random(7)
    admitted = 0
    refused = {0: False, 1: False}
    while not all(refused.values()):  # until each has spent its slice and been refused
        which = rng.randrange(2)
        decision = await pair[which].hit("user", rate, "shared")
        admitted += decision.allowed
        refused[which] = refused[which] or not decision.allowed
    assert admitted <= rate.limit + 2 * (n - 1)
    # In one burst every unit was granted by Redis during the burst: none beyond the limit.
    # (The excess comes from slices taken *before* an interval and spent in it.)
    assert admitted == rate.limit
    assert script_calls.count < 100


async def test_concurrent_requests_of_a_key_share_one_call(
    limiter: RateLimiter, script_calls: ScriptCalls
) -> None:
    rate = Rate(600, 3_600)
    decisions = await asyncio.gather(*(limiter.hit("user", rate, "many") for _ in range(100)))
    assert all(d.allowed for d in decisions)
    # One call at a time, each slice spent by the waiting requests: 1+2+4+8+16+30+30+30.
    assert script_calls.count == 8
    assert sorted(d.remaining for d in decisions) == list(range(500, 600))


@pytest.mark.parametrize("limit", [5, 20])
async def test_small_limits_stay_exact_across_instances(
    pair: tuple[RateLimiter, RateLimiter], script_calls: ScriptCalls, limit: int
) -> None:
    rate = Rate(limit, 60)  # login-style: n = 1
    assert rate.slice_units == 1
    decisions = [await pair[i % 2].hit("login_ip", rate, "ip") for i in range(limit + 1)]
    assert [d.allowed for d in decisions] == [True] * limit + [False]
    assert [d.remaining for d in decisions] == [*range(limit - 1, -1, -1), 0]
    assert script_calls.count == limit + 1  # every decision taken by Redis
    # Concurrent requests through both instances: still exactly the limit.
    rate2 = Rate(limit, 60)
    concurrent = await asyncio.gather(
        *(pair[i % 2].hit("login_ip", rate2, "ip2") for i in range(limit + 10))
    )
    assert sum(d.allowed for d in concurrent) == limit


@pytest.mark.parametrize("rate", [Rate(5, 2.5), Rate(40, 20)], ids=["n=1", "n=2"])
async def test_a_refused_client_costs_no_calls_until_retry_after(
    limiter: RateLimiter, script_calls: ScriptCalls, rate: Rate
) -> None:
    """T = 500 ms for both: the flood below takes a few ms (far less on an idle machine)."""
    interval = rate.interval_us / 1_000_000
    started = time.monotonic()
    decisions: list[Decision] = []
    while not decisions or decisions[-1].allowed:
        decisions.append(await limiter.hit("p", rate, "flood"))
    burst_s = time.monotonic() - started
    assert len(decisions) == rate.limit + 1
    refused = decisions[-1]
    # The next unit is due one interval after the burst began.
    assert interval - burst_s <= refused.retry_after_s <= interval
    calls = script_calls.count
    flood = [await limiter.hit("p", rate, "flood") for _ in range(500)]
    flood += await asyncio.gather(*(limiter.hit("p", rate, "flood") for _ in range(100)))
    assert script_calls.count == calls  # all answered in process
    assert not any(d.allowed for d in flood)
    waits = [d.retry_after_s for d in flood[:500]]
    assert waits == sorted(waits, reverse=True) and 0 < waits[-1] <= refused.retry_after_s
    assert all(d.remaining == 0 for d in flood)
    # Polled: hits before the retry-after are answered in process, then one call admits.
    await until(lambda: allowed(limiter, rate, "flood"), 10, "the retry-after")
    assert script_calls.count == calls + 1


async def test_a_concurrent_flood_of_a_refused_client_costs_one_call(
    pair: tuple[RateLimiter, RateLimiter], script_calls: ScriptCalls
) -> None:
    first, second = pair
    rate = Rate(100, 60)
    assert sum([(await first.hit("anonymous", rate, "ip")).allowed for _ in range(110)]) == 100
    calls = script_calls.count
    flood = await asyncio.gather(*(second.hit("anonymous", rate, "ip") for _ in range(200)))
    assert not any(d.allowed for d in flood)
    assert script_calls.count == calls + 1


async def test_units_not_spent_within_the_slice_lifetime_are_lost(
    redis_url: str, bus_prefix: str, script_calls: ScriptCalls
) -> None:
    limiter = RateLimiter(redis_url, prefix=bus_prefix, slice_lifetime_s=0.5)
    await limiter.start()
    try:
        rate = Rate(600, 3_600)  # T = 6 s: no refill during the test
        for _ in range(1 + 2 + 4 + 1):  # slices of 1, 2, 4, 8: the last holds 7 unspent
            assert (await limiter.hit("user", rate, "idle")).allowed
        assert script_calls.count == 4
        # Time passing is the subject: outlive the slice (nothing to observe until a hit).
        await asyncio.sleep(0.55)
        decision = await limiter.hit("user", rate, "idle")
        assert script_calls.count == 5  # the slice expired: Redis again
        # 15 units charged before, the 7 unspent ones lost, 1 more now.
        assert decision.allowed and decision.remaining == 600 - 15 - 1
        rest = [await limiter.hit("user", rate, "idle") for _ in range(650)]
        assert sum(d.allowed for d in rest) == 600 - 15 - 1
    finally:
        await limiter.close()


async def test_no_double_burst_at_a_window_edge_with_slices(limiter: RateLimiter) -> None:
    rate = Rate(100, 0.5)  # one per 5 ms, bursts of 100, slices of up to 5
    n = rate.slice_units
    interval = rate.interval_us / 1_000_000
    edge = await just_before_a_window_edge()
    started = time.monotonic()
    first = [await limiter.hit("p", rate, "edge") for _ in range(100)]
    await asyncio.sleep(max(0.0, edge + 0.01 - time.time()))
    second = [await limiter.hit("p", rate, "edge") for _ in range(100)]
    elapsed = time.monotonic() - started
    assert sum(d.allowed for d in first) >= 90  # the burst took a few ms of refill too
    # What the elapsed time paid for, plus at most the units of one slice taken before
    # (a bound that holds however slow the machine made the bursts).
    total = sum(d.allowed for d in first + second)
    assert total <= rate.limit + math.floor(elapsed / interval) + 1 + (n - 1)


async def test_sliced_policies_hold_with_redis_down(
    throwaway_redis: RedisServer, captured_log: structlog.testing.CapturingLogger
) -> None:
    limiter = RateLimiter(throwaway_redis.url, prefix="rl:", retry_interval_s=30)
    await limiter.start()
    rate = Rate(100, 60)  # slices of up to 5
    try:
        for _ in range(3):  # slices of 1 and 2, both spent
            assert (await limiter.hit("anonymous", rate, "203.0.113.7")).allowed
        await asyncio.to_thread(throwaway_redis.stop)
        before = fallback_total()
        decisions = [await limiter.hit("anonymous", rate, "203.0.113.7") for _ in range(150)]
        # The in-process GCRA's own budget, no more.
        assert sum(d.allowed for d in decisions) == 100
        assert not any(d.allowed for d in decisions[100:])
        assert fallback_total() - before == 150
        assert events(captured_log).count("ratelimit_fallback") == 1
    finally:
        await limiter.close()


async def test_a_raised_limit_applies_at_once(redis_url: str, bus_prefix: str) -> None:
    """A process restarted with a higher limit (the old one's spent state still in Redis)
    grants the new budget at once."""
    before = RateLimiter(redis_url, prefix=bus_prefix)
    await before.start()
    try:
        decisions = [await before.hit("anonymous", Rate(3, 60), "198.51.100.9") for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]
    finally:
        await before.close()
    after = RateLimiter(redis_url, prefix=bus_prefix)
    await after.start()
    try:
        raised = await after.hit("anonymous", Rate(30, 60), "198.51.100.9")
        assert raised.allowed and raised.remaining == 29
    finally:
        await after.close()
