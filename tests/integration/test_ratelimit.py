"""The Redis GCRA against a real Redis: bursts, shared budgets, window edges, outages."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import structlog
from prometheus_client import REGISTRY

from coinlink import ratelimit
from coinlink.ratelimit import Rate, RateLimiter
from tests.support.services import RedisServer


@pytest.fixture
async def limiter(redis_url: str, bus_prefix: str) -> AsyncIterator[RateLimiter]:
    limiter = RateLimiter(redis_url, prefix=bus_prefix)
    await limiter.start()
    yield limiter
    await limiter.close()


@pytest.fixture
def captured_log(monkeypatch: pytest.MonkeyPatch) -> structlog.testing.CapturingLogger:
    # The module's logger may already be cached by an earlier configure_logging(): replace it.
    capturing = structlog.testing.CapturingLogger()
    monkeypatch.setattr(ratelimit, "log", capturing)
    return capturing


@pytest.fixture
def throwaway_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


def fallback_total() -> float:
    return REGISTRY.get_sample_value("ratelimit_fallback_total") or 0.0


def events(log: structlog.testing.CapturingLogger) -> list[str]:
    return [str(call.args[0]) for call in log.calls]


async def test_burst_then_refused_with_retry_after(
    limiter: RateLimiter, redis_url: str, bus_prefix: str
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
    client = redis.Redis.from_url(redis_url)
    try:
        keys = client.keys(f"{bus_prefix}*")
        assert len(keys) == 1
        key = keys[0].decode() if isinstance(keys[0], bytes) else keys[0]
        assert key.startswith(f"{bus_prefix}anonymous:")
        assert "203.0.113.7" not in key
        assert 0 < client.pttl(key) <= 60_000
    finally:
        client.close()


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


async def test_no_double_burst_at_a_window_edge(limiter: RateLimiter) -> None:
    rate = Rate(10, 0.5)  # one per 50 ms, bursts of 10
    interval = rate.interval_us / 1_000_000
    # Straddle the instant a fixed 0.5 s window (aligned on the clock) would roll over.
    edge = (math.floor(time.time() / 0.5) + 2) * 0.5
    await asyncio.sleep(edge - 0.03 - time.time())
    started = time.monotonic()
    first = [await limiter.hit("p", rate, "edge") for _ in range(10)]
    await asyncio.sleep(max(0.0, edge + 0.01 - time.time()))
    second = [await limiter.hit("p", rate, "edge") for _ in range(10)]
    elapsed = time.monotonic() - started
    assert all(d.allowed for d in first)
    # A fixed window would allow all ten again; GCRA only what the elapsed time paid for.
    assert sum(d.allowed for d in second) <= math.floor(elapsed / interval) + 1
    assert sum(d.allowed for d in second) < 10


async def test_limiter_refills_at_the_rate(limiter: RateLimiter) -> None:
    rate = Rate(4, 0.4)  # one per 100 ms
    assert all([(await limiter.hit("p", rate, "refill")).allowed for _ in range(4)])
    refused = await limiter.hit("p", rate, "refill")
    assert not refused.allowed
    await asyncio.sleep(refused.retry_after_s + 0.02)
    assert (await limiter.hit("p", rate, "refill")).allowed
    assert not (await limiter.hit("p", rate, "refill")).allowed


async def test_redis_down_falls_back_and_recovers(
    throwaway_redis: RedisServer, captured_log: structlog.testing.CapturingLogger
) -> None:
    limiter = RateLimiter(throwaway_redis.url, prefix="rl:", retry_interval_s=0.3)
    await limiter.start()
    rate = Rate(3, 60)
    try:
        assert (await limiter.hit("login_ip", rate, "203.0.113.7")).allowed
        assert not limiter.redis_down

        throwaway_redis.stop()
        before = fallback_total()
        decisions = []
        for _ in range(5):
            started = time.monotonic()
            decisions.append(await limiter.hit("login_ip", rate, "203.0.113.7"))
            assert time.monotonic() - started < 1.0
        # Still limited: the local limiter has its own budget of three.
        assert [d.allowed for d in decisions] == [True, True, True, False, False]
        assert limiter.redis_down
        assert fallback_total() - before == 5
        assert events(captured_log).count("ratelimit_fallback") == 1
        assert captured_log.calls[0].method_name == "warning"

        # While the breaker is open, Redis is not tried at all (no connect attempts).
        started = time.monotonic()
        for _ in range(50):
            await limiter.hit("login_ip", rate, "198.51.100.1")
        assert time.monotonic() - started < 0.2
        assert events(captured_log).count("ratelimit_fallback") == 1

        throwaway_redis.start()  # same port
        deadline = time.monotonic() + 5
        while limiter.redis_down and time.monotonic() < deadline:
            await limiter.hit("anonymous", rate, "probe")
            await asyncio.sleep(0.05)
        assert not limiter.redis_down
        assert events(captured_log).count("ratelimit_recovered") == 1
        # The Redis path again: a fresh Redis has a fresh budget for this key, and the
        # decision lands there.
        assert (await limiter.hit("login_ip", rate, "203.0.113.7")).remaining == 2
        client = redis.Redis.from_url(throwaway_redis.url)
        try:
            assert client.keys("rl:login_ip:*")
        finally:
            client.close()
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
        assert time.monotonic() - started < 1.0
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
        assert time.monotonic() - started < 0.6
        assert decision.allowed and decision.remaining == 4
        assert limiter.redis_down
    finally:
        await limiter.close()
        done.set()
        server.close()
        await server.wait_closed()
