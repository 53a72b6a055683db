"""Budget slices and cached refusals: most requests cost no Redis round trip.

Asking Redis on every request (~165 µs wall, ~100 µs of CPU in redis-py per round trip)
would cost more than the market-data endpoints can afford. So for each (policy, key) a
process takes a *slice* of units from the shared Redis GCRA in one call (cost ``n`` in the
script of :mod:`coinlink.ratelimit.limiter`) and spends it locally, one unit per request,
with no Redis call, until the slice is used up or expires. Then the next request takes the
next slice.

* Slice size: at most ``n = min(1000, limit // 20)``, at least 1 (:func:`slice_size`,
  ``Rate.slice_units``). Every policy with ``limit < 40``, so all the small ones (login,
  register: 20 and less), has ``n = 1``: exact per-request decisions in Redis, as without
  slices. ``300/60``: up to 15; ``600/60``: up to 30; ``6000/60``: up to 300. So a
  process never holds more than a twentieth of a policy's limit (the over-admission
  bound below grows with the limit, in that proportion). The cap was 50 until a busy
  address under a large limit was seen asking Redis a hundred times a second per worker
  (at 5,000 requests a second); 1,000 lets it ask a few times.
* Each key's slices follow its demand (:meth:`SliceTable.cost`): a key's first slice is
  one unit; the next is sized to last half a lifetime at the pace the last one was spent,
  and at most twice what it spent, up to ``n``. A burst ramps up 1, 2, 4, ... ``n`` (five
  calls to reach 30); a steady client spends every slice before it expires and loses
  nothing; a key seen now and then gets slices of 1. (A fixed ``n`` would charge such a
  key ``n`` units per request: at one request a second, a ``600/60`` client would lose 29
  units a second, three times what the policy refills, and be refused within a minute.)
* Near the limit: when the units asked for no longer fit but one does, the script grants
  1 instead (in the same call, atomically), so a client close to its limit is decided
  request by request in Redis. One process alone therefore admits *exactly* ``limit`` in
  a burst, whether or not the slice sizes divide ``limit`` (the last units come one at a
  time).
* Lifetime: a slice must be spent within ``L = min(period, slice_lifetime_s)`` (1 s by
  default), counted from just before the call that took it. Units unspent by then are
  simply lost: they stay charged in Redis and are never given back (a give-back would be
  one more round trip, and a race). That errs on the strict side only, and the demand
  sizing keeps it small: a slice is at most twice what the key spent from the one
  before, so a client that slows down or stops loses less than twice its recent use.
* One slice at a time: while one request of a (policy, key) is asking Redis, concurrent
  requests of the same (policy, key) in this process wait for its answer and then spend
  from the slice it brought (or share its refusal), instead of each asking Redis.

**The over-admission bound.** Every unit admitted was granted by Redis, at most one slice
lifetime ``L`` before it is spent, and a process holds at most ``n - 1`` unspent units per
(policy, key) (a slice is taken by a request, which spends one unit of it at once). So
with ``P`` processes holding slices, over any interval a client gets at most what the
Redis GCRA alone would have allowed plus ``P * (n - 1)``: **a client can exceed its limit
by at most P * (n - 1) units within one slice lifetime** (e.g. 4 workers on ``600/60``:
116 requests beyond the 600, all of them granted by Redis less than a second earlier).
Policies with ``n = 1`` (all the small ones: login, register) are never over-admitted.

Cached refusals: a refused flood costs no Redis calls
-----------------------------------------------------
When Redis refuses a (policy, key), the process remembers the refusal until its
``retry_after`` has elapsed (measured from when the answer arrived, so never early) and
answers those requests itself: a 429 with the remaining ``Retry-After``, no round trip.
That is exact, not an approximation: the TAT in Redis only moves forward until then, so
Redis would have refused them too. The first request after ``retry_after`` asks Redis
again: one call.

Headers: ``RateLimit-Remaining`` is Redis's remaining right after the slice was granted
plus the units of the slice still unspent here (never negative); it counts down by one
per request, exactly as without slices in a single-process burst. ``RateLimit-Reset`` is
Redis's reset at the grant, less the time since: the budget is whole again once the TAT
has drained, which includes the whole slice (a slice left unspent is not given back).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from coinlink.ratelimit.rates import US, Decision, Rate


class _Slot:
    """What this process holds for one (policy, key): a slice, or a cached refusal."""

    __slots__ = ("asked_at", "left", "refused", "remaining", "reset_at", "size", "until")

    def __init__(
        self,
        *,
        refused: bool,
        until: float,
        asked_at: float,
        size: int,
        remaining: int,
        reset_at: float,
    ) -> None:
        self.refused = refused  # a refusal by Redis, else a slice
        self.until = until  # clock time: the slice expires / the refusal lapses then
        self.asked_at = asked_at  # clock time just before the Redis call
        self.size = size  # units granted (0 for a refusal)
        self.left = size  # unspent units of the slice
        self.remaining = remaining  # Redis's remaining right after the grant
        self.reset_at = reset_at  # clock time at which the budget is whole, per Redis


class SliceTable:
    """The budget slices and cached refusals of this process, per policy and key digest.

    :meth:`take` answers a request locally when it can: it spends one unit of a live slice,
    or repeats a refusal whose retry-after has not elapsed. Otherwise the caller asks Redis
    for :meth:`cost` units and hands the answer to :meth:`store`.

    Slice sizes follow each key's demand, up to the policy's ``rate.slice_units`` (see the
    module docstring), so a key that sends a request now and then gets slices of one unit
    and loses nothing to expiry: a fixed size would charge such a key a whole slice per
    request, and drain its budget at a fraction of its rate.

    Memory stays bounded as in :class:`LocalGCRA`: ``store`` is the only way in; it drops up
    to ``_PRUNE_PER_STORE`` dead entries (a refusal that lapsed, a slice two lifetimes old)
    from the front of the table (stored longest ago) and evicts from the front past
    ``max_keys``. An evicted slice's units are lost, an evicted refusal costs one more Redis
    call: both err on the side of asking Redis.
    """

    _PRUNE_PER_STORE: Final = 16

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 50_000,
        lifetime_s: float = 1.0,
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        if not lifetime_s > 0:
            raise ValueError("lifetime_s must be positive")
        self.clock = clock
        self.lifetime_s = lifetime_s
        self._max_keys = max_keys
        self._tables: dict[str, OrderedDict[str, _Slot]] = {}

    def __len__(self) -> int:
        return sum(len(table) for table in self._tables.values())

    def lifetime(self, rate: Rate) -> float:
        """How long a slice of ``rate`` may be spent: ``min(period, lifetime_s)``."""
        return min(rate.period_s, self.lifetime_s)

    def _slot(self, policy_name: str, digest: str) -> _Slot | None:
        table = self._tables.get(policy_name)
        return None if table is None else table.get(digest)

    def take(self, policy_name: str, rate: Rate, digest: str) -> Decision | None:
        """A local decision (one unit of the slice, or the cached refusal), else None."""
        slot = self._slot(policy_name, digest)
        if slot is None:
            return None
        now = self.clock()
        if now >= slot.until:
            return None
        if slot.refused:
            return Decision(False, rate.limit, 0, max(0.0, slot.reset_at - now), slot.until - now)
        if slot.left == 0:
            return None
        slot.left -= 1
        return Decision(
            True, rate.limit, slot.remaining + slot.left, max(0.0, slot.reset_at - now), 0.0
        )

    def cost(self, policy_name: str, rate: Rate, digest: str) -> int:
        """The units to ask Redis for now: this key's next slice.

        1 for a key without a recent slice or just refused. Otherwise the last slice's
        units were spent over the time since it was asked for: the next one should last
        half a lifetime at that pace, and be at most twice the units spent (so a burst
        ramps up 1, 2, 4, ... and never loses more than it spent), within
        ``[1, rate.slice_units]``. A steady client thus spends each slice before it expires.
        """
        top = rate.slice_units
        if top == 1:
            return 1
        slot = self._slot(policy_name, digest)
        if slot is None or slot.refused:
            return 1
        spent = slot.size - slot.left
        elapsed = self.clock() - slot.asked_at
        wanted = 2 * spent
        if elapsed > 0:
            wanted = min(wanted, math.floor(spent * self.lifetime(rate) / 2 / elapsed))
        return max(1, min(top, wanted))

    def store(
        self,
        policy_name: str,
        rate: Rate,
        digest: str,
        *,
        asked_at: float,
        granted: int,
        remaining: int,
        reset_us: int,
        retry_us: int,
    ) -> Decision:
        """Keep Redis's answer (asked at clock time ``asked_at``) and decide the request
        that asked: it spends one of the ``granted`` units (0: refused)."""
        now = self.clock()
        table = self._tables.get(policy_name)
        if table is None:
            table = self._tables[policy_name] = OrderedDict()
        table.pop(digest, None)
        self._prune(table, now)
        remaining = max(0, remaining)
        reset_s = reset_us / US
        if granted < 1:
            retry_s = retry_us / US
            # From the answer's arrival: Redis read its clock before that, so the cached
            # refusal never lapses before Redis would allow the request.
            table[digest] = _Slot(
                refused=True,
                until=now + retry_s,
                asked_at=asked_at,
                size=0,
                remaining=0,
                reset_at=now + reset_s,
            )
            return Decision(False, rate.limit, 0, reset_s, retry_s)
        if rate.slice_units > 1:  # exact policies keep nothing but refusals
            # The lifetime counts from before the call: a unit is never spent more than a
            # lifetime after Redis granted it.
            slot = table[digest] = _Slot(
                refused=False,
                until=asked_at + self.lifetime(rate),
                asked_at=asked_at,
                size=granted,
                remaining=remaining,
                reset_at=now + reset_s,
            )
            slot.left -= 1  # the asking request's unit
        return Decision(True, rate.limit, remaining + granted - 1, reset_s, 0.0)

    def _prune(self, table: OrderedDict[str, _Slot], now: float) -> None:
        for _ in range(self._PRUNE_PER_STORE):
            if not table:
                return
            oldest = table[next(iter(table))]
            dead_at = oldest.until
            if not oldest.refused:  # kept one more lifetime after it expires, for cost()
                dead_at += oldest.until - oldest.asked_at
            if now < dead_at:
                break
            table.popitem(last=False)
        while len(table) >= self._max_keys:
            table.popitem(last=False)
