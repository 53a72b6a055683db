"""The rate limiter: GCRA in Redis (shared by every instance), spent locally in slices.

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

Keys are ``<prefix><policy>:<limit>/<period>:<digest>``: the caller's key (an IP, a user
id, an email) is hashed, so no address or email sits in Redis and an attacker-chosen key
cannot be huge. The rate is in the name because a key's state (its TAT) only means
something under the rate that wrote it: a client that spent a 10/60 budget would stay
refused for up to a minute after the limit was raised to 1000/60. A changed rate starts
with a whole budget at once, and the old keys expire by themselves.
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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from functools import lru_cache
from typing import Final

import structlog
from prometheus_client import Counter
from redis.asyncio import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from coinlink.ratelimit.gcra import LocalGCRA
from coinlink.ratelimit.rates import Decision, Rate
from coinlink.ratelimit.slices import SliceTable
from coinlink.redis_calls import BACKEND_ERRORS, Client, connect, raise_swallowed_cancel

log = structlog.get_logger(logger_name="coinlink.ratelimit")

RATELIMIT_FALLBACK = Counter(
    "ratelimit_fallback_total",
    "Rate-limit decisions taken in process because Redis was unreachable.",
)

DEFAULT_PREFIX: Final = "coinlink:rl:"
_DISCOVERY_S: Final = 5.0  # at most this long at start for a cluster's slot map


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
        self._client: Client | None = None
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
        """Create the client; connections open on first use (Redis may be away at boot).

        A cluster's slot map is fetched here when the cluster answers: discovering it
        takes a round trip to every node, more than a decision's ``timeout_s``, and the
        first requests would otherwise be decided locally.
        """
        self._connect()
        if isinstance(self._client, RedisCluster):
            with contextlib.suppress(*BACKEND_ERRORS):
                async with asyncio.timeout(_DISCOVERY_S):
                    await self._client.initialize()

    def _connect(self) -> None:
        if self._client is not None or self.redis_url is None or self._closed:
            return
        self._client = connect(
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
            with contextlib.suppress(*BACKEND_ERRORS):
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
            except BACKEND_ERRORS as exc:
                self._trip(exc)
        elif not self._probing and time.monotonic() >= self._retry_at:
            self._probing = True
            try:
                decision = await self._redis_hit(script, policy_name, rate, digest)
            except BACKEND_ERRORS as exc:
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
                keys=[f"{self.prefix}{policy_name}:{rate.tag}:{digest}"],
                args=[rate.interval_us, rate.capacity_us, rate.expiry_ms, cost],
            )
        raise_swallowed_cancel()
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
