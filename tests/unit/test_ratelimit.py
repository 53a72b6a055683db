"""The in-process GCRA, driven by a fake clock: bursts, retry-after, pacing, window edges."""

from __future__ import annotations

import math
import random

import pytest

from coinlink.ratelimit import Decision, LocalGCRA, Policies, Rate, RateLimiter, gcra, ip_key
from config import load_settings


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gcra_local(clock: FakeClock) -> LocalGCRA:
    return LocalGCRA(clock=clock)


def burst(limiter: LocalGCRA, rate: Rate, n: int, key: str = "k") -> list[Decision]:
    return [limiter.hit("p", rate, key) for _ in range(n)]


def test_rate_derives_whole_microseconds() -> None:
    rate = Rate(10, 1.0)
    assert (rate.interval_us, rate.capacity_us, rate.expiry_ms) == (100_000, 1_000_000, 1_000)
    # 60 s / 7 is not a whole number of µs: the interval is rounded down, never up, so a
    # client pacing itself at exactly the configured rate is never refused.
    odd = Rate(7, 60)
    assert odd.interval_us == 8_571_428
    assert odd.capacity_us == 7 * 8_571_428 <= 60_000_000
    assert Rate.parse("5/60") == Rate(5, 60.0)
    with pytest.raises(ValueError):
        Rate(0, 60)
    with pytest.raises(ValueError):
        Rate.parse("five per minute")


def test_burst_up_to_the_limit_then_refused(gcra_local: LocalGCRA) -> None:
    rate = Rate(5, 60)
    decisions = burst(gcra_local, rate, 6)
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    assert all(d.limit == 5 for d in decisions)
    # The budget is whole again once every emitted request has "drained": 12 s each.
    assert [d.reset_s for d in decisions[:5]] == [12.0, 24.0, 36.0, 48.0, 60.0]
    assert decisions[5].reset_s == 60.0


def test_retry_after_is_exact(gcra_local: LocalGCRA, clock: FakeClock) -> None:
    rate = Rate(5, 10)  # one every 2 s
    burst(gcra_local, rate, 5)
    refused = gcra_local.hit("p", rate, "k")
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(2.0)
    clock.advance(1.5)
    assert gcra_local.hit("p", rate, "k").retry_after_s == pytest.approx(0.5)


def test_waiting_retry_after_allows_exactly_one(gcra_local: LocalGCRA, clock: FakeClock) -> None:
    rate = Rate(3, 60)
    burst(gcra_local, rate, 3)
    refused = gcra_local.hit("p", rate, "k")
    clock.advance(refused.retry_after_s)
    allowed = gcra_local.hit("p", rate, "k")
    assert allowed.allowed and allowed.remaining == 0
    assert not gcra_local.hit("p", rate, "k").allowed


def test_refusals_do_not_consume(gcra_local: LocalGCRA, clock: FakeClock) -> None:
    rate = Rate(2, 2)
    burst(gcra_local, rate, 2)
    assert not any(d.allowed for d in burst(gcra_local, rate, 50))  # hammering costs nothing
    clock.advance(1.0)
    assert [d.allowed for d in burst(gcra_local, rate, 2)] == [True, False]


@pytest.mark.parametrize("rate", [Rate(10, 1), Rate(7, 60), Rate(600, 60), Rate(3, 0.5)])
def test_steady_rate_at_exactly_the_limit_is_sustained(
    gcra_local: LocalGCRA, clock: FakeClock, rate: Rate
) -> None:
    spacing = rate.period_s / rate.limit
    # From a full bucket (worst case: right after a burst) ...
    assert all(d.allowed for d in burst(gcra_local, rate, rate.limit))
    for _ in range(2_000):
        clock.advance(spacing)
        decision = gcra_local.hit("p", rate, "k")
        assert decision.allowed, decision
        assert decision.remaining == 0
    # ... but never faster: a request ahead of schedule is refused.
    clock.advance(spacing * 0.9)
    assert not gcra_local.hit("p", rate, "k").allowed


def test_no_double_burst_at_a_window_edge(gcra_local: LocalGCRA, clock: FakeClock) -> None:
    rate = Rate(10, 1)
    clock.now = 100.99  # just before a fixed window (aligned on whole seconds) would reset
    assert all(d.allowed for d in burst(gcra_local, rate, 10))
    clock.now = 101.01  # just after it: a fixed window would allow ten more here
    second = burst(gcra_local, rate, 10)
    assert sum(d.allowed for d in second) <= 1
    assert sum(d.allowed for d in second) == 0  # 20 ms buys nothing at 100 ms per request
    # Time buys requests at the policy's rate, one per 100 ms, and no faster.
    clock.now = 101.09
    assert [d.allowed for d in burst(gcra_local, rate, 2)] == [True, False]


@pytest.mark.parametrize("seed", range(5))
def test_no_interval_exceeds_burst_plus_rate(seed: int) -> None:
    """Over any interval [a, b], allowed <= limit + (b - a) / T: a burst, then the rate."""
    rng = random.Random(seed)
    clock = FakeClock(0.0)
    limiter = LocalGCRA(clock=clock)
    rate = Rate(10, 1)
    interval = rate.interval_us / 1_000_000
    allowed_at: list[float] = []
    for _ in range(3_000):
        # Mostly bursts, sometimes pauses, sometimes around whole seconds.
        clock.advance(rng.choice([0.0, 0.0, 0.001, 0.01, 0.05, 0.3, 1.0 - clock.now % 1.0]))
        if limiter.hit("p", rate, "k").allowed:
            allowed_at.append(clock.now)
    assert len(allowed_at) > 100
    for i, start in enumerate(allowed_at):
        for j in range(i, min(i + 40, len(allowed_at))):
            count = j - i + 1
            span = allowed_at[j] - start
            assert count <= rate.limit + math.floor(span / interval + 1e-9)


def test_keys_and_policies_are_independent(gcra_local: LocalGCRA) -> None:
    rate = Rate(1, 60)
    assert gcra_local.hit("p", rate, "a").allowed
    assert not gcra_local.hit("p", rate, "a").allowed
    assert gcra_local.hit("p", rate, "b").allowed
    assert gcra_local.hit("q", rate, "a").allowed


def test_memory_is_bounded_by_max_keys(clock: FakeClock) -> None:
    limiter = LocalGCRA(clock=clock, max_keys=1_000)
    rate = Rate(5, 3_600)  # nothing expires during the test
    for i in range(20_000):
        assert limiter.hit("p", rate, f"client-{i}").allowed
    assert len(limiter) <= 1_000
    # The keys evicted under pressure are the ones touched longest ago.
    assert limiter.hit("p", rate, "client-19999").remaining == 3


def test_idle_keys_are_pruned(clock: FakeClock) -> None:
    limiter = LocalGCRA(clock=clock)
    rate = Rate(5, 10)
    for i in range(1_000):
        limiter.hit("p", rate, f"client-{i}")
    assert len(limiter) == 1_000
    clock.advance(10.0)  # every TAT is now in the past
    for _ in range(100):  # each hit prunes a few from the front: constant cost per call
        limiter.hit("p", rate, "busy")
    assert len(limiter) == 1


def test_gcra_step_matches_the_documented_formula() -> None:
    rate = Rate(4, 8)  # T = 2 s, capacity 8 s
    decision, tat = gcra(rate, 10_000_000, None)
    assert decision == Decision(True, 4, 3, 2.0, 0.0) and tat == 12_000_000
    decision, tat = gcra(rate, 10_000_000, 16_000_000)  # three emitted, 6 s ahead
    assert decision == Decision(True, 4, 0, 8.0, 0.0) and tat == 18_000_000
    decision, tat = gcra(rate, 10_000_000, 17_000_000)
    assert not decision.allowed and tat is None
    assert decision.retry_after_s == pytest.approx(1.0)  # (17 + 2 - 10) - 8
    assert decision.reset_s == pytest.approx(7.0)
    decision, tat = gcra(rate, 10_000_000, 3_000_000)  # a TAT in the past counts as now
    assert decision == Decision(True, 4, 3, 2.0, 0.0) and tat == 12_000_000


async def test_limiter_without_redis_decides_in_process() -> None:
    limiter = RateLimiter(None)
    await limiter.start()
    rate = Rate(2, 60)
    decisions = [await limiter.hit("p", rate, "1.2.3.4") for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert not limiter.redis_down
    await limiter.close()


def test_policies_from_settings() -> None:
    settings = load_settings(
        env="test", rate_limit_anonymous="3/60", rate_limit_login_account="5/300"
    )
    policies = Policies.from_settings(settings)
    assert set(policies) == {"anonymous", "user", "login_account", "login_ip", "register"}
    assert policies["anonymous"] == Rate(3, 60)
    assert policies["login_account"] == Rate(5, 300)
    assert policies["register"] == Rate(10, 3600)
    with pytest.raises(ValueError, match="missing"):
        Policies({"anonymous": Rate(1, 1)})


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),  # IPv4 through a dual-stack socket
        ("", ""),
    ],
)
def test_ip_key(address: str, key: str) -> None:
    assert ip_key(address) == key
