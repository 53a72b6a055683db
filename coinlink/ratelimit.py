"""Rate limiting: GCRA in Redis (shared by every instance), spent locally in slices.

The algorithm
-------------
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

Budget slices: most requests cost no Redis round trip
-----------------------------------------------------
A round trip per request (~165 µs wall, ~100 µs of CPU in redis-py) is more than the
market-data endpoints can afford. So for each (policy, key) a process takes a *slice* of
units from the shared Redis GCRA in one call (cost ``n`` in the script above) and spends
it locally, one unit per request, with no Redis call, until the slice is used up or
expires. Then the next request takes the next slice.

* Slice size: at most ``n = min(50, limit // 20)``, at least 1 (:func:`slice_size`,
  ``Rate.slice_units``). Every policy with ``limit < 40``, so all the small ones (login,
  register: 20 and less), has ``n = 1``: exact per-request decisions in Redis, as without
  slices. ``300/60``: up to 15; ``600/60``: up to 30.
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

Why our own Lua script rather than the ``limits`` library
--------------------------------------------------------
``limits`` 5.x (checked: 5.8) has fixed window, moving window and sliding window counter
strategies, but no GCRA. Its ``hit()`` returns only a bool: the remaining count and reset
time need a second call (``get_window_stats``), a second round trip that is not atomic
with the first. Its moving window keeps one list entry per request (600 for a 600/60
policy) and stamps them with the *client's* clock, so instances with skewed clocks
disagree; its periods are whole multiples of a granularity (no 0.5 s). Nor does it lease
budget in slices. One short script does all of it here: decision (of ``n`` units, or 1),
remaining, reset and retry-after in one EVALSHA, one key of a few bytes per client,
Redis's own clock (``TIME``) so every instance agrees, and a PX expiry of the period so
idle keys vanish by themselves.

Keys are ``<prefix><policy>:<digest>``: the caller's key (an IP, a user id, an email) is
hashed, so no address or email sits in Redis and an attacker-chosen key cannot be huge.
The local tables (slices, cached refusals, the fallback GCRA) are keyed by the same digest
and bounded: expired entries are pruned a few at a time, and each table is capped.

Failures
--------
Every Redis call is bounded by ``timeout_s`` (socket timeouts, no client-side retries,
and a deadline over the whole call, which may include a script reload). When Redis fails
or times out, that call is decided by the in-process GCRA, so the auth routes are never
unlimited: each process then enforces the policy by itself (a client spread over N
processes gets up to N budgets, better than none). The breaker then stays open for
``retry_interval_s``: calls go straight to the local limiter, and afterwards a single
probe call tries Redis again while concurrent calls stay local. ``ratelimit_fallback``
is logged once per outage, ``ratelimit_recovered`` once when Redis answers again, and
``ratelimit_fallback_total`` counts the decisions taken locally. Slices and refusals
obtained from Redis before the outage stay valid until they expire (at most ``n - 1``
units per key and process; a refusal is still true).

The middleware
--------------
:func:`install` adds a request middleware that resolves the client address (trusted
proxies applied; stored as ``request.ctx.client_ip``) and applies one policy per request:
``user`` keyed by user id when the bearer token names one, else ``anonymous`` keyed by
address (IPv6 by its /64: one subscriber gets a whole /64 and could otherwise rotate
through it). ``POST /api/v2/auth/login`` and ``.../register`` also pay ``login_ip`` and
``register`` per address; the login handler adds ``login_account`` per email through
:func:`enforce`. The most restrictive decision becomes the ``RateLimit-*`` headers; a
refusal is the 429 envelope with ``Retry-After``.

It registers at priority 900. Sanic runs request middleware from the highest priority
down (ties in registration order) and response middleware from the lowest up, so the
limiter runs after ``coinlink.middleware``'s trace id/metrics hook (1000): a 429 carries
the request's trace id and is counted in ``http_requests_total``. Its response hook runs
before that hook's, which only adds other headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final, NamedTuple

import structlog
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError
from sanic import Request, Sanic
from sanic.response import BaseHTTPResponse

from coinlink.clientip import TrustedProxies, client_ip, parse_address
from coinlink.errors import ApiError
from coinlink.middleware import QUIET_ROUTES, route_label
from config import Settings
from config.settings import parse_rate

log = structlog.get_logger(logger_name="coinlink.ratelimit")

RATELIMIT_FALLBACK = Counter(
    "ratelimit_fallback_total",
    "Rate-limit decisions taken in process because Redis was unreachable.",
)
RATELIMIT_REJECTIONS = Counter(
    "ratelimit_rejections_total", "Requests refused with 429, by policy.", ["policy"]
)

DEFAULT_PREFIX: Final = "coinlink:rl:"
POLICY_NAMES: Final = ("anonymous", "user", "login_account", "login_ip", "register")

# redis-py wraps socket failures in RedisError, but a few paths (and asyncio.timeout) raise
# the builtin ones; all three mean "Redis did not answer".
_BACKEND_ERRORS: Final = (RedisError, OSError, TimeoutError)
_US: Final = 1_000_000

# Slices: n = min(_SLICE_MAX, limit // _SLICE_DIVISOR), at least 1; see the module docstring.
_SLICE_DIVISOR: Final = 20
_SLICE_MAX: Final = 50

_GCRA_SCRIPT: Final = """
-- KEYS[1]: the key's TAT, integer microseconds of Redis server time.
-- ARGV: emission interval T (us), capacity = limit * T (us), expiry (ms, >= capacity),
--       cost n: the units wanted (a slice). When n do not fit but 1 does, 1 is granted.
-- Returns {granted units (0: refused), remaining, reset (us), retry after (us)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local ahead = tat + cost * interval - now
if ahead > capacity then
  -- Not the whole slice: a single unit, so a client near its limit is decided exactly.
  cost = 1
  ahead = tat + interval - now
  if ahead > capacity then
    return {0, 0, tat - now, ahead - capacity}
  end
end
-- '%.0f': tostring() keeps only 14 digits, and the TAT has 16.
redis.call('SET', KEYS[1], string.format('%.0f', now + ahead), 'PX', ARGV[3])
return {cost, math.floor((capacity - ahead) / interval), ahead, 0}
"""


def slice_size(limit: int) -> int:
    """Units a process takes from Redis at once for a policy of ``limit`` per period.

    1 (an exact Redis decision per request) for every ``limit < 40``, then ``limit // 20``
    (a twentieth of the burst), at most 50.
    """
    return max(1, min(_SLICE_MAX, limit // _SLICE_DIVISOR))


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` requests per ``period_s`` seconds."""

    limit: int
    period_s: float
    interval_us: int = field(init=False, repr=False, compare=False)
    capacity_us: int = field(init=False, repr=False, compare=False)
    expiry_ms: int = field(init=False, repr=False, compare=False)
    slice_units: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.limit < 1 or not self.period_s > 0:
            raise ValueError(f"invalid rate {self.limit}/{self.period_s}")
        # Rounded down: a client pacing at exactly limit/period is never refused.
        interval = max(1, round(self.period_s * _US) // self.limit)
        object.__setattr__(self, "interval_us", interval)
        object.__setattr__(self, "capacity_us", interval * self.limit)
        object.__setattr__(self, "expiry_ms", -(-interval * self.limit // 1000))
        object.__setattr__(self, "slice_units", slice_size(self.limit))

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"5/60"`` → five per minute."""
        return cls(*parse_rate(text))


class Decision(NamedTuple):
    """One limiter's answer. ``reset_s``: until the budget is whole; ``retry_after_s``: 0
    when allowed, else until the next request would be.

    A named tuple rather than a frozen dataclass: one is made per request, and a frozen
    dataclass's ``__init__`` (an ``object.__setattr__`` per field) costs three times as much.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float


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
            False, rate.limit, 0, (tat - now_us) / _US, (ahead - rate.capacity_us) / _US
        )
        return decision, None
    remaining = (rate.capacity_us - ahead) // rate.interval_us
    return Decision(True, rate.limit, remaining, ahead / _US, 0.0), now_us + ahead


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
        now = round(self._clock() * _US)
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
        reset_s = reset_us / _US
        if granted < 1:
            retry_s = retry_us / _US
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


@lru_cache(maxsize=4096)
def _digest(key: str) -> str:
    # Cached: a busy client's key is hashed once, not on every request (~0.45 us each).
    # Bounded, opaque keys: no emails or addresses in Redis, no attacker-sized keys.
    return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


class RateLimiter:
    """GCRA decisions from Redis when ``redis_url`` is set, else (or meanwhile) in process.

    Redis budget is taken in slices and refusals are cached (see the module docstring);
    ``slices`` holds them (default: a :class:`SliceTable` with ``slice_lifetime_s``).
    """

    def __init__(
        self,
        redis_url: str | None,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout_s: float = 0.25,
        retry_interval_s: float = 1.0,
        local: LocalGCRA | None = None,
        slices: SliceTable | None = None,
        slice_lifetime_s: float = 1.0,
    ) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.retry_interval_s = retry_interval_s
        self.local = local or LocalGCRA()
        self.slices = slices or SliceTable(lifetime_s=slice_lifetime_s)
        # (policy, digest) → set when the Redis call in flight for it has finished.
        self._inflight: dict[tuple[str, str], asyncio.Event] = {}
        self._client: Redis | None = None
        self._script: AsyncScript | None = None
        self._down = False  # an outage is in progress (logged once)
        self._retry_at = 0.0  # monotonic time before which Redis is not tried
        self._probing = False  # one call is finding out whether Redis is back
        self._closed = False

    @property
    def redis_down(self) -> bool:
        """True while decisions are taken locally because Redis failed."""
        return self._down

    async def start(self) -> None:
        """Create the client; connections open on first use (Redis may be away at boot)."""
        self._connect()

    def _connect(self) -> None:
        if self._client is not None or self.redis_url is None or self._closed:
            return
        self._client = Redis.from_url(
            self.redis_url,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            # No retries: a retry would double the wait, and the local limiter is the plan B.
            retry=Retry(NoBackoff(), 0),
            client_name="coinlink-ratelimit",
        )
        self._script = self._client.register_script(_GCRA_SCRIPT)

    async def close(self) -> None:
        """Close the client; a late call (during shutdown) is decided in process."""
        self._closed = True
        client, self._client, self._script = self._client, None, None
        if client is not None:
            with contextlib.suppress(*_BACKEND_ERRORS):
                await client.aclose()

    def hit_now(self, policy_name: str, rate: Rate, key: str) -> Decision | None:
        """:meth:`hit` when it needs no Redis call (no Redis configured, a live slice or a
        cached refusal), without a coroutine; else None, and nothing is counted.

        The middleware's fast path: most requests are decided here.
        """
        digest = _digest(key)
        if self.redis_url is None:
            return self.local.hit(policy_name, rate, digest)
        return self.slices.take(policy_name, rate, digest)

    async def hit(self, policy_name: str, rate: Rate, key: str) -> Decision:
        """Count one request of ``key`` against ``policy_name`` and decide it."""
        decision = self.hit_now(policy_name, rate, key)
        if decision is not None:
            return decision
        digest = _digest(key)
        # One Redis call at a time per (policy, key) in this process: concurrent requests
        # wait for it and spend from the slice it brings (or share its refusal), so a
        # process never holds more than one slice of a key.
        flight = (policy_name, digest)
        while (pending := self._inflight.get(flight)) is not None:
            await pending.wait()
            decision = self.slices.take(policy_name, rate, digest)
            if decision is not None:
                return decision
        done = self._inflight[flight] = asyncio.Event()
        try:
            return await self._decide(policy_name, rate, digest)
        finally:
            del self._inflight[flight]
            done.set()

    async def _decide(self, policy_name: str, rate: Rate, digest: str) -> Decision:
        if self._script is None:
            self._connect()  # used before start(): still share the budget
        script = self._script
        if script is None:
            return self.local.hit(policy_name, rate, digest)
        if not self._down:
            try:
                return await self._redis_hit(script, policy_name, rate, digest)
            except _BACKEND_ERRORS as exc:
                self._trip(exc)
        elif not self._probing and time.monotonic() >= self._retry_at:
            self._probing = True
            try:
                decision = await self._redis_hit(script, policy_name, rate, digest)
            except _BACKEND_ERRORS as exc:
                self._trip(exc)
            else:
                self._down = False
                log.info("ratelimit_recovered")
                return decision
            finally:
                self._probing = False
        RATELIMIT_FALLBACK.inc()
        return self.local.hit(policy_name, rate, digest)

    async def _redis_hit(
        self, script: AsyncScript, policy_name: str, rate: Rate, digest: str
    ) -> Decision:
        cost = self.slices.cost(policy_name, rate, digest)
        asked_at = self.slices.clock()
        # A deadline over the whole call: connect + EVALSHA (+ SCRIPT LOAD after a restart).
        async with asyncio.timeout(self.timeout_s):
            result = await script(
                keys=[f"{self.prefix}{policy_name}:{digest}"],
                args=[rate.interval_us, rate.capacity_us, rate.expiry_ms, cost],
            )
        granted, remaining, reset_us, retry_us = result
        return self.slices.store(
            policy_name,
            rate,
            digest,
            asked_at=asked_at,
            granted=int(granted),
            remaining=int(remaining),
            reset_us=int(reset_us),
            retry_us=int(retry_us),
        )

    def _trip(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + self.retry_interval_s
        if not self._down:
            self._down = True
            log.warning(
                "ratelimit_fallback",
                error=f"{type(exc).__name__}: {exc}",
                retry_interval_s=self.retry_interval_s,
            )


class Policies(Mapping[str, Rate]):
    """The named rates: ``anonymous``, ``user``, ``login_account``, ``login_ip``, ``register``."""

    def __init__(self, rates: Mapping[str, Rate]) -> None:
        missing = set(POLICY_NAMES) - set(rates)
        if missing:
            raise ValueError(f"missing rate-limit policies: {', '.join(sorted(missing))}")
        self._rates = dict(rates)

    @classmethod
    def from_settings(cls, settings: Settings) -> Policies:
        return cls(
            {
                "anonymous": Rate.parse(settings.rate_limit_anonymous),
                "user": Rate.parse(settings.rate_limit_user),
                "login_account": Rate.parse(settings.rate_limit_login_account),
                "login_ip": Rate.parse(settings.rate_limit_login_ip),
                "register": Rate.parse(settings.rate_limit_register),
            }
        )

    def __getitem__(self, name: str) -> Rate:
        return self._rates[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rates)

    def __len__(self) -> int:
        return len(self._rates)

    def __repr__(self) -> str:
        return f"Policies({self._rates!r})"


# ---------------------------------------------------------------------------------------
# Middleware

PRIORITY: Final = 900  # below coinlink.middleware's 1000: runs after the trace id is set
_APP_KEY: Final = "rate_limiting"
_UNLIMITED_PATHS: Final = QUIET_ROUTES  # the probes
_LOGIN_PATH: Final = "/api/v2/auth/login"
_REGISTER_PATH: Final = "/api/v2/auth/register"


@dataclass(frozen=True, slots=True)
class _Installed:
    limiter: RateLimiter
    policies: Policies


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    return {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(math.ceil(decision.reset_s)),
    }


def _record(request: Request, policy_name: str, decision: Decision) -> None:
    """Keep the most restrictive decision for the headers; raise the 429 on a refusal."""
    current: Decision | None = getattr(request.ctx, "rate_limit", None)
    if not decision.allowed:
        request.ctx.rate_limit = decision
        RATELIMIT_REJECTIONS.labels(policy_name).inc()
        headers = rate_limit_headers(decision)
        # At least 1: "Retry-After: 0" would invite an immediate, refused retry.
        headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after_s)))
        raise ApiError(
            "too many requests; retry later", status=429, code="rate_limited", headers=headers
        )
    if (
        current is None
        or decision.remaining < current.remaining
        or (decision.remaining == current.remaining and decision.reset_s > current.reset_s)
    ):
        request.ctx.rate_limit = decision


async def enforce(request: Request, policy_name: str, key: str) -> Decision | None:
    """Apply ``policy_name`` to ``key`` from a handler (e.g. ``login_account`` per email).

    Raises the 429 :class:`ApiError` when refused; otherwise the decision joins the
    request's ``RateLimit-*`` headers. None when rate limits are not installed (disabled).
    Callers pass a normalised key (the login handler's email is already lower-cased).
    """
    installed: _Installed | None = getattr(request.app.ctx, _APP_KEY, None)
    if installed is None:
        return None
    decision = await installed.limiter.hit(policy_name, installed.policies[policy_name], key)
    _record(request, policy_name, decision)
    return decision


@lru_cache(maxsize=4096)
def ip_key(address: str) -> str:
    """The rate-limit key of an address: IPv4 as is, IPv6 by its /64."""
    if ":" not in address:
        return address
    parsed = parse_address(address)
    if parsed is None:
        return address
    if isinstance(parsed, ipaddress.IPv4Address):  # IPv4-mapped, from a dual-stack socket
        return str(parsed)
    return f"{ipaddress.IPv6Network((parsed, 64), strict=False).network_address}/64"


def install(
    app: Sanic[Any, Any],
    limiter: RateLimiter,
    policies: Policies,
    trusted: TrustedProxies,
    user_of: Callable[[str], str | None],
) -> None:
    """Add the rate-limit middleware, unless ``rate_limits_enabled`` is off.

    The caller owns the limiter's lifecycle (``start``/``close`` in the worker listeners);
    a limiter used before ``start`` connects by itself.
    """
    settings: Settings | None = getattr(app.ctx, "settings", None)
    if settings is not None and not settings.rate_limits_enabled:
        return
    setattr(app.ctx, _APP_KEY, _Installed(limiter, policies))
    hit, hit_now = limiter.hit, limiter.hit_now
    anonymous, user, login_ip, register = (
        policies["anonymous"],
        policies["user"],
        policies["login_ip"],
        policies["register"],
    )

    async def limit_request(request: Request) -> None:
        path = request.path
        if (
            request.method == "OPTIONS"
            or path in _UNLIMITED_PATHS
            or path == "/docs"
            or path.startswith("/docs/")
        ):
            return
        ip = request.ctx.client_ip = client_ip(request, trusted)
        user_id = None
        authorization = request.headers.get("authorization")
        if authorization and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
            user_id = user_of(token) if token else None
        # Decided without a coroutine when no Redis call is needed (most requests).
        if user_id is not None:
            decision = hit_now("user", user, user_id) or await hit("user", user, user_id)
            _record(request, "user", decision)
        else:
            key = ip_key(ip)
            decision = hit_now("anonymous", anonymous, key) or await hit(
                "anonymous", anonymous, key
            )
            _record(request, "anonymous", decision)
        if request.method == "POST":
            # The matched route, not the raw path: "/api/v2/auth/login/" or an encoded
            # variant reaching the same handler must pay the same policy.
            target = (request.route and route_label(request)) or path
            target = target.rstrip("/")
            if target == _LOGIN_PATH:
                _record(request, "login_ip", await hit("login_ip", login_ip, ip_key(ip)))
            elif target == _REGISTER_PATH:
                _record(request, "register", await hit("register", register, ip_key(ip)))

    # A coroutine although it never waits: Sanic tests each middleware's result with
    # inspect.isawaitable, which a coroutine passes at once and None only after the
    # Awaitable ABC's isinstance check (a plain function costs more here).
    async def add_headers(request: Request, response: BaseHTTPResponse) -> None:
        decision: Decision | None = getattr(request.ctx, "rate_limit", None)
        if decision is not None:
            response.headers.update(rate_limit_headers(decision))

    app.register_middleware(limit_request, "request", priority=PRIORITY)
    app.register_middleware(add_headers, "response", priority=PRIORITY)
