"""The in-process GCRA, driven by a fake clock: bursts, retry-after, pacing, window edges.

Also the budget slices (:class:`SliceTable`) against a Python copy of the Redis script
(:class:`ScriptMirror`), on the same fake clock: slice sizes, expiry, cached refusals,
memory bounds, and the over-admission bound over every interval.
"""

from __future__ import annotations

import math
import random

import pytest

from coinlink.http.ratelimit import ip_key
from coinlink.ratelimit import (
    Decision,
    LocalGCRA,
    Policies,
    Rate,
    RateLimiter,
    SliceTable,
    gcra,
    slice_size,
)
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
    with pytest.raises(ValueError):
        Rate(0, 60)


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
    policies = Policies.from_settings(settings.rate_limit)
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


# ---------------------------------------------------------------------------------------
# Budget slices


class ScriptMirror:
    """The Lua script in Python: ``cost`` units if they fit, else 1, else refused."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.tats: dict[str, int] = {}
        self.calls = 0

    def call(self, rate: Rate, key: str, cost: int) -> tuple[int, int, int, int]:
        self.calls += 1
        now = round(self.clock() * 1_000_000)
        for units in dict.fromkeys((cost, 1)):
            decision, tat = gcra(rate, now, self.tats.get(key), units)
            if tat is not None:
                self.tats[key] = tat
                return units, decision.remaining, round(decision.reset_s * 1_000_000), 0
        reset, retry = decision.reset_s, decision.retry_after_s
        return 0, 0, round(reset * 1_000_000), round(retry * 1_000_000)


def slice_hit(table: SliceTable, redis: ScriptMirror, rate: Rate, key: str = "k") -> Decision:
    """What ``RateLimiter.hit`` does with a healthy Redis."""
    decision = table.take("p", rate, key)
    if decision is not None:
        return decision
    cost = table.cost("p", rate, key)
    asked_at = table.clock()
    granted, remaining, reset_us, retry_us = redis.call(rate, key, cost)
    return table.store(
        "p",
        rate,
        key,
        asked_at=asked_at,
        granted=granted,
        remaining=remaining,
        reset_us=reset_us,
        retry_us=retry_us,
    )


@pytest.fixture
def slices(clock: FakeClock) -> SliceTable:
    return SliceTable(clock=clock)


@pytest.fixture
def mirror(clock: FakeClock) -> ScriptMirror:
    return ScriptMirror(clock)


@pytest.mark.parametrize(
    ("limit", "units"),
    [
        (1, 1),
        (5, 1),
        (20, 1),
        (39, 1),
        (40, 2),
        (300, 15),
        (600, 30),
        (1_000, 50),
        (1_020, 51),
        (19_999, 999),
        (20_000, 1_000),
        (10**6, 1_000),
    ],
)
def test_slice_size(limit: int, units: int) -> None:
    assert slice_size(limit) == units == Rate(limit, 60).slice_units


def test_gcra_with_a_cost_takes_several_units_or_none() -> None:
    rate = Rate(4, 8)  # T = 2 s, capacity 8 s
    decision, tat = gcra(rate, 10_000_000, None, 3)
    assert decision == Decision(True, 4, 1, 6.0, 0.0) and tat == 16_000_000
    decision, tat = gcra(rate, 10_000_000, 16_000_000, 2)  # 6 s + 4 s > 8 s: refused ...
    assert not decision.allowed and tat is None
    assert decision.retry_after_s == pytest.approx(2.0)  # ... until 2 units fit
    assert gcra(rate, 10_000_000, 16_000_000, 1)[1] == 18_000_000  # one still fits
    assert gcra(rate, 10_000_000, None, 4)[0].remaining == 0  # the whole burst at once
    assert not gcra(rate, 10_000_000, None, 5)[0].allowed
    with pytest.raises(ValueError):
        gcra(rate, 0, None, 0)


def test_slice_lifetime_is_the_shorter_of_period_and_setting() -> None:
    table = SliceTable(lifetime_s=1.0)
    assert table.lifetime(Rate(600, 60)) == 1.0
    assert table.lifetime(Rate(100, 0.5)) == 0.5
    with pytest.raises(ValueError):
        SliceTable(lifetime_s=0)


def test_a_burst_ramps_up_to_the_policy_slice_and_is_exact(
    slices: SliceTable, mirror: ScriptMirror
) -> None:
    rate = Rate(600, 3_600)  # n = 30; no refill to speak of
    decisions = [slice_hit(slices, mirror, rate) for _ in range(700)]
    admitted = [d for d in decisions if d.allowed]
    assert len(admitted) == 600  # exactly the limit, in one process
    # Remaining counts down one per request, as without slices.
    assert [d.remaining for d in admitted] == list(range(599, -1, -1))
    assert all(d.remaining == 0 for d in decisions[600:])
    # 1 + 2 + 4 + 8 + 16 = 31 ramping up, 18 slices of 30 (571), then 29 units near the
    # limit decided by Redis in small slices, then one refusal cached for the rest.
    assert mirror.calls < 40


def test_slice_sizes_follow_demand(
    slices: SliceTable, mirror: ScriptMirror, clock: FakeClock
) -> None:
    rate = Rate(600, 60)  # n = 30, T = 100 ms, lifetime 1 s

    def next_cost() -> int:
        # Spend the current slice, then look at what the next request would ask for.
        while slices.take("p", rate, "k") is not None:
            pass
        return slices.cost("p", rate, "k")

    assert slices.cost("p", rate, "k") == 1  # a key never seen: one unit
    costs = []
    for _ in range(7):  # a burst: doubling, up to n
        costs.append(slices.cost("p", rate, "k"))
        slice_hit(slices, mirror, rate)
        next_cost()
    assert costs == [1, 2, 4, 8, 16, 30, 30]
    # A client slowing to 10 requests a second: slices that last half a lifetime.
    for _ in range(20):
        clock.advance(0.1)
        assert slice_hit(slices, mirror, rate).allowed
    assert slices.cost("p", rate, "k") in (4, 5, 6)
    # One request every 2 s: a slice of one unit each time, nothing lost.
    for _ in range(5):
        clock.advance(2.0)
        assert slices.cost("p", rate, "k") == 1
        assert slice_hit(slices, mirror, rate).allowed
    # Exact policies always ask for one.
    assert slices.cost("login", Rate(20, 60), "k") == 1


@pytest.mark.parametrize("spacing", [0.1, 0.15, 0.5, 1.0, 2.5])
def test_a_client_within_its_rate_is_never_drained_by_lost_units(
    slices: SliceTable, mirror: ScriptMirror, clock: FakeClock, spacing: float
) -> None:
    """Lost (expired) units must not add up: a client at or below its rate keeps its budget.

    With a fixed slice of 30 a client at one request a second would be charged 30 units
    a second against a refill of 10, and refused within a minute.
    """
    rate = Rate(600, 60)
    lowest = rate.limit
    for _ in range(round(600 / spacing)):  # ten minutes
        clock.advance(spacing)
        decision = slice_hit(slices, mirror, rate)
        assert decision.allowed, decision
        lowest = min(lowest, decision.remaining)
    assert lowest >= rate.limit - 2 * rate.slice_units


def test_pacing_at_exactly_the_rate_after_a_burst_is_never_refused(
    slices: SliceTable, mirror: ScriptMirror, clock: FakeClock
) -> None:
    rate = Rate(600, 60)
    assert sum(slice_hit(slices, mirror, rate).allowed for _ in range(600)) == 600
    for _ in range(2_000):
        clock.advance(rate.period_s / rate.limit)
        decision = slice_hit(slices, mirror, rate)
        assert decision.allowed and decision.remaining == 0, decision
    clock.advance(rate.period_s / rate.limit * 0.9)
    assert not slice_hit(slices, mirror, rate).allowed


def test_units_not_spent_within_the_lifetime_are_lost(
    slices: SliceTable, mirror: ScriptMirror, clock: FakeClock
) -> None:
    rate = Rate(600, 3_600)
    for _ in range(1 + 2 + 4 + 1):  # the fourth slice (8 units) holds 7 unspent
        slice_hit(slices, mirror, rate)
    assert mirror.calls == 4
    clock.advance(slices.lifetime(rate))  # expired: those 7 are never spent
    calls = mirror.calls
    decision = slice_hit(slices, mirror, rate)
    assert mirror.calls == calls + 1
    assert decision.allowed and decision.remaining == 600 - 15 - 1
    # The client gets what Redis still has, not the lost units.
    clock.advance(0.001)
    rest = sum(slice_hit(slices, mirror, rate).allowed for _ in range(700))
    assert rest == 600 - 15 - 1


def test_refusals_are_cached_until_retry_after(
    slices: SliceTable, mirror: ScriptMirror, clock: FakeClock
) -> None:
    rate = Rate(40, 2)  # n = 2, T = 50 ms
    assert sum(slice_hit(slices, mirror, rate).allowed for _ in range(40)) == 40
    refused = slice_hit(slices, mirror, rate)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(0.05)
    calls = mirror.calls
    clock.advance(0.03)
    flood = [slice_hit(slices, mirror, rate) for _ in range(1_000)]
    assert mirror.calls == calls  # answered here, no Redis calls
    assert not any(d.allowed for d in flood)
    assert flood[0].retry_after_s == pytest.approx(0.02)
    assert flood[0].remaining == 0 and flood[0].reset_s == pytest.approx(1.97)
    clock.advance(0.02)
    assert slice_hit(slices, mirror, rate).allowed  # one call, and one unit
    assert mirror.calls == calls + 1


def test_exact_policies_keep_no_slices(slices: SliceTable, mirror: ScriptMirror) -> None:
    rate = Rate(5, 60)
    decisions = [slice_hit(slices, mirror, rate) for _ in range(5)]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert len(slices) == 0 and mirror.calls == 5  # every unit decided by Redis
    assert not slice_hit(slices, mirror, rate).allowed
    assert len(slices) == 1  # the cached refusal


def test_two_processes_exceed_gcra_by_at_most_their_held_units() -> None:
    """Over any interval [a, b]: allowed <= limit + (b - a) / T + P * (n - 1), P = 2.

    Bursts of up to 150 requests spread at random over two processes, with pauses: the
    budget runs out again and again, and units a process took before a pause are spent
    after it, so the excess over the plain GCRA bound does occur; it stays within the
    bound.
    """
    rate = Rate(200, 2)  # T = 10 ms, n = 10, lifetime 1 s
    n = rate.slice_units
    worst_of_all = 0
    for seed in range(4):
        rng = random.Random(seed)
        clock = FakeClock(0.0)
        redis = ScriptMirror(clock)
        processes = [SliceTable(clock=clock), SliceTable(clock=clock)]
        allowed_at: list[int] = []
        refused = 0
        while len(allowed_at) + refused < 6_000:
            for _ in range(rng.randint(1, 150)):
                clock.advance(rng.choice([0.0, 0.0, 0.0001, 0.001]))
                if slice_hit(rng.choice(processes), redis, rate).allowed:
                    allowed_at.append(round(clock.now * 1_000_000))
                else:
                    refused += 1
            clock.advance(rng.choice([0.05, 0.1, 0.2, 0.4, 0.8]))
        assert refused > 1_000 and len(allowed_at) > 1_000
        worst = 0
        for i, start in enumerate(allowed_at):
            for j in range(i + rate.limit, min(i + 2 * rate.limit, len(allowed_at))):
                excess = (j - i + 1) - rate.limit - (allowed_at[j] - start) // rate.interval_us
                worst = max(worst, excess)
        assert worst <= 2 * (n - 1)
        worst_of_all = max(worst_of_all, worst)
    assert worst_of_all > 0  # the carried-over units were exercised


def test_slice_table_memory_is_bounded(clock: FakeClock, mirror: ScriptMirror) -> None:
    table = SliceTable(clock=clock, max_keys=1_000)
    rate = Rate(600, 3_600)
    for i in range(5_000):
        slice_hit(table, mirror, rate, f"client-{i}")
        slice_hit(table, mirror, rate, f"client-{i}")
    assert len(table) <= 1_000
    # Dead entries go a few per store: a refusal that lapsed, a slice two lifetimes old.
    clock.advance(2 * table.lifetime(rate))
    for i in range(200):
        slice_hit(table, mirror, Rate(600, 3_600), f"busy-{i}")
    assert len(table) == 200
