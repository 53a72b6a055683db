"""GCRA, the generic cell rate algorithm: one step of it, and a limiter in this process.

GCRA, the generic cell rate algorithm. A policy allows ``limit`` requests per ``period``:
requests are "emitted" every ``T = period / limit`` and a burst of up to ``limit`` is
tolerated. Each key stores one number, its theoretical arrival time (TAT). Taking ``n``
units at once (a request is one unit)::

    tat     = max(stored_tat, now)
    new_tat = tat + n * T
    allowed = new_tat - now <= limit * T          (the burst capacity, ~ the period)

An allowed grant stores ``new_tat``; a refused one changes nothing, and may retry after
``new_tat - now - limit * T``. ``remaining = floor((limit * T - (new_tat - now)) / T)``
and the budget is whole again after ``new_tat - now`` (the ``RateLimit-Reset``). There are
no windows, so there is no double burst at a window edge: ``limit`` requests just before
a fixed window would roll over leave the key ``limit * T`` ahead of the clock, and only
time, at the policy's rate, buys more. All arithmetic is in integer microseconds, with
``T`` rounded to a whole microsecond and the capacity defined as ``limit * T``; integers
keep the edge cases exact (the ``limit``-th request of a burst, a client pacing itself at
exactly the rate), where floating point would drift by a request now and then. ``T`` is
rounded down, so the limiter errs by at most a microsecond per request on the lenient side.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from coinlink.ratelimit.rates import US, Decision, Rate


def gcra(
    rate: Rate, now_us: int, stored_tat_us: int | None, cost: int = 1
) -> tuple[Decision, int | None]:
    """One GCRA step of ``cost`` units: the decision and the TAT to store (None: refused,
    store nothing; ``retry_after_s`` is then until ``cost`` units fit).

    The same arithmetic as the Lua script, for the in-process limiter and the tests (the
    script's "else one unit" is a second step with ``cost=1``).
    """
    if cost < 1:
        raise ValueError("cost must be at least 1")
    tat = stored_tat_us if stored_tat_us is not None and stored_tat_us > now_us else now_us
    ahead = tat + cost * rate.interval_us - now_us
    if ahead > rate.capacity_us:
        decision = Decision(
            False, rate.limit, 0, (tat - now_us) / US, (ahead - rate.capacity_us) / US
        )
        return decision, None
    remaining = (rate.capacity_us - ahead) // rate.interval_us
    return Decision(True, rate.limit, remaining, ahead / US, 0.0), now_us + ahead


class LocalGCRA:
    """The same GCRA in this process: one ordered table per policy, key → TAT (µs).

    Memory stays bounded. Each hit moves its key to the end of its table, so the front
    holds the keys touched longest ago; a hit drops up to ``_PRUNE_PER_HIT`` expired keys
    (TAT in the past) from the front, so keys idle for a period go away at no more than
    constant cost per call. A table never exceeds ``max_keys``: past that the key touched
    longest ago is evicted even if live (it gets a fresh budget; memory matters more).
    """

    _PRUNE_PER_HIT: Final = 16

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 50_000
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._clock = clock
        self._max_keys = max_keys
        self._tables: dict[str, OrderedDict[str, int]] = {}

    def __len__(self) -> int:
        return sum(len(table) for table in self._tables.values())

    def hit(self, policy_name: str, rate: Rate, key: str) -> Decision:
        now = round(self._clock() * US)
        table = self._tables.get(policy_name)
        if table is None:
            table = self._tables[policy_name] = OrderedDict()
        stored = table.pop(key, None)
        self._prune(table, now)
        decision, tat = gcra(rate, now, stored)
        if tat is None:
            tat = stored  # refused: the stored TAT stands (and is in the future)
        if tat is not None:
            table[key] = tat
        return decision

    def _prune(self, table: OrderedDict[str, int], now: int) -> None:
        for _ in range(self._PRUNE_PER_HIT):
            if not table:
                return
            oldest = next(iter(table))
            if table[oldest] > now:
                break
            del table[oldest]
        while len(table) >= self._max_keys:
            table.popitem(last=False)
