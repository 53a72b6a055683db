"""Rate limiting: GCRA in Redis (shared by every instance), in process as the fallback.

The algorithm
-------------
GCRA, the generic cell rate algorithm. A policy allows ``limit`` requests per ``period``:
requests are "emitted" every ``T = period / limit`` and a burst of up to ``limit`` is
tolerated. Each key stores one number, its theoretical arrival time (TAT)::

    tat     = max(stored_tat, now)
    new_tat = tat + T
    allowed = new_tat - now <= limit * T          (the burst capacity, ~ the period)

An allowed request stores ``new_tat``; a refused one changes nothing, and may retry after
``new_tat - now - limit * T``. ``remaining = floor((limit * T - (new_tat - now)) / T)``
and the budget is whole again after ``new_tat - now`` (the ``RateLimit-Reset``). There are
no windows, so there is no double burst at a window edge: ``limit`` requests just before
a fixed window would roll over leave the key ``limit * T`` ahead of the clock, and only
time, at the policy's rate, buys more. All arithmetic is in integer microseconds, with
``T`` rounded to a whole microsecond and the capacity defined as ``limit * T``; integers
keep the edge cases exact (the ``limit``-th request of a burst, a client pacing itself at
exactly the rate), where floating point would drift by a request now and then. ``T`` is
rounded down, so the limiter errs by at most a microsecond per request on the lenient side.

Why our own Lua script rather than the ``limits`` library
--------------------------------------------------------
``limits`` 5.x (checked: 5.8) has fixed window, moving window and sliding window counter
strategies, but no GCRA. Its ``hit()`` returns only a bool: the remaining count and reset
time need a second call (``get_window_stats``), a second round trip that is not atomic
with the first. Its moving window keeps one list entry per request (600 for a 600/60
policy) and stamps them with the *client's* clock, so instances with skewed clocks
disagree; its periods are whole multiples of a granularity (no 0.5 s). One short script
does all of it here: decision, remaining, reset and retry-after in one EVALSHA, one key of
a few bytes per client, Redis's own clock (``TIME``) so every instance agrees, and a PX
expiry of the period so idle keys vanish by themselves.

Keys are ``<prefix><policy>:<digest>``: the caller's key (an IP, a user id, an email) is
hashed, so no address or email sits in Redis and an attacker-chosen key cannot be huge.

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
``ratelimit_fallback_total`` counts the decisions taken locally.

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
from typing import Any, Final

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

_GCRA_SCRIPT: Final = """
-- KEYS[1]: the key's TAT, integer microseconds of Redis server time.
-- ARGV: emission interval T (us), capacity = limit * T (us), expiry (ms, >= capacity).
-- Returns {allowed 0/1, remaining, reset (us), retry after (us)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local ahead = tat + interval - now
if ahead > capacity then
  return {0, 0, tat - now, ahead - capacity}
end
-- '%.0f': tostring() keeps only 14 digits, and the TAT has 16.
redis.call('SET', KEYS[1], string.format('%.0f', now + ahead), 'PX', ARGV[3])
return {1, math.floor((capacity - ahead) / interval), ahead, 0}
"""


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` requests per ``period_s`` seconds."""

    limit: int
    period_s: float
    interval_us: int = field(init=False, repr=False, compare=False)
    capacity_us: int = field(init=False, repr=False, compare=False)
    expiry_ms: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.limit < 1 or not self.period_s > 0:
            raise ValueError(f"invalid rate {self.limit}/{self.period_s}")
        # Rounded down: a client pacing at exactly limit/period is never refused.
        interval = max(1, round(self.period_s * _US) // self.limit)
        object.__setattr__(self, "interval_us", interval)
        object.__setattr__(self, "capacity_us", interval * self.limit)
        object.__setattr__(self, "expiry_ms", -(-interval * self.limit // 1000))

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"5/60"`` → five per minute."""
        return cls(*parse_rate(text))


@dataclass(frozen=True, slots=True)
class Decision:
    """One limiter's answer. ``reset_s``: until the budget is whole; ``retry_after_s``: 0
    when allowed, else until the next request would be."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float


def gcra(rate: Rate, now_us: int, stored_tat_us: int | None) -> tuple[Decision, int | None]:
    """One GCRA step: the decision and the TAT to store (None: refused, store nothing).

    The same arithmetic as the Lua script, for the in-process limiter and the tests.
    """
    tat = stored_tat_us if stored_tat_us is not None and stored_tat_us > now_us else now_us
    ahead = tat + rate.interval_us - now_us
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


def _digest(key: str) -> str:
    # Bounded, opaque keys: no emails or addresses in Redis, no attacker-sized keys.
    return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


class RateLimiter:
    """GCRA decisions from Redis when ``redis_url`` is set, else (or meanwhile) in process."""

    def __init__(
        self,
        redis_url: str | None,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout_s: float = 0.25,
        retry_interval_s: float = 1.0,
        local: LocalGCRA | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.retry_interval_s = retry_interval_s
        self.local = local or LocalGCRA()
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

    async def hit(self, policy_name: str, rate: Rate, key: str) -> Decision:
        """Count one request of ``key`` against ``policy_name`` and decide it."""
        digest = _digest(key)
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
        # A deadline over the whole call: connect + EVALSHA (+ SCRIPT LOAD after a restart).
        async with asyncio.timeout(self.timeout_s):
            result = await script(
                keys=[f"{self.prefix}{policy_name}:{digest}"],
                args=[rate.interval_us, rate.capacity_us, rate.expiry_ms],
            )
        allowed, remaining, reset_us, retry_us = result
        return Decision(bool(allowed), rate.limit, remaining, reset_us / _US, retry_us / _US)

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
    hit = limiter.hit
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
        if user_id is not None:
            _record(request, "user", await hit("user", user, user_id))
        else:
            _record(request, "anonymous", await hit("anonymous", anonymous, ip_key(ip)))
        if request.method == "POST":
            # The matched route, not the raw path: "/api/v2/auth/login/" or an encoded
            # variant reaching the same handler must pay the same policy.
            target = (request.route and route_label(request)) or path
            target = target.rstrip("/")
            if target == _LOGIN_PATH:
                _record(request, "login_ip", await hit("login_ip", login_ip, ip_key(ip)))
            elif target == _REGISTER_PATH:
                _record(request, "register", await hit("register", register, ip_key(ip)))

    async def add_headers(request: Request, response: BaseHTTPResponse) -> None:
        decision: Decision | None = getattr(request.ctx, "rate_limit", None)
        if decision is not None:
            response.headers.update(rate_limit_headers(decision))

    app.register_middleware(limit_request, "request", priority=PRIORITY)
    app.register_middleware(add_headers, "response", priority=PRIORITY)
