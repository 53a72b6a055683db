"""coinlink.backoff: the bounds of every wait, the cap, the jitter's range, and reset."""

from __future__ import annotations

import itertools
import random

import pytest

from coinlink import backoff
from coinlink.backoff import Backoff


def test_the_lowest_draw_is_half_the_ceiling_and_doubles() -> None:
    low = [backoff.delay(n, base_s=5.0, cap_s=3600.0, rng=lambda: 0.0) for n in range(1, 16)]
    assert low[:4] == [2.5, 5.0, 10.0, 20.0]
    assert all(b == 2 * a for a, b in itertools.pairwise(low[:10]))
    assert low[-1] == 1800.0  # half the cap: never less than that once capped


def test_the_highest_draw_is_the_ceiling_up_to_the_cap() -> None:
    high = [backoff.delay(n, base_s=0.1, cap_s=2.0, rng=lambda: 1.0) for n in range(1, 8)]
    assert high == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])


def test_a_huge_failure_count_is_the_cap_not_an_overflow() -> None:
    assert backoff.delay(10_000, base_s=5.0, cap_s=3600.0, rng=lambda: 1.0) == 3600.0


def test_the_jitter_is_uniform_over_the_upper_half() -> None:
    rng = random.Random(1)
    for failures in range(1, 12):
        ceiling = min(3600.0, 5.0 * 2 ** (failures - 1))
        draws = [
            backoff.delay(failures, base_s=5.0, cap_s=3600.0, rng=rng.random) for _ in range(400)
        ]
        assert all(ceiling / 2 <= d <= ceiling for d in draws)
        # Spread over the whole half, not stuck at one end: retries do not fall in lockstep.
        assert min(draws) < ceiling * 0.55 and max(draws) > ceiling * 0.95
    assert backoff.delay(3, base_s=1.0, cap_s=3.0, rng=lambda: 0.5) == 2.25


def test_failures_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        backoff.delay(0, base_s=1.0, cap_s=2.0)


@pytest.mark.parametrize(("base_s", "cap_s"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_a_backoff_needs_a_positive_base_under_its_cap(base_s: float, cap_s: float) -> None:
    with pytest.raises(ValueError, match="base_s <= cap_s"):
        Backoff(base_s, cap_s)


def test_next_grows_to_the_cap_and_reset_starts_short_again() -> None:
    retry = Backoff(0.5, 10.0, rng=lambda: 1.0)
    assert [retry.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert retry.failures == 7
    retry.reset()
    assert retry.failures == 0
    assert retry.next() == 0.5
    assert retry.failures == 1


def test_next_draws_with_jitter_by_default() -> None:
    retry = Backoff(1.0, 1.0)
    draws = {retry.next() for _ in range(50)}
    assert len(draws) > 1 and all(0.5 <= d <= 1.0 for d in draws)
