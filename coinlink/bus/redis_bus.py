"""The Redis bus: every worker of every instance shares channels, keys and leases.

Atomicity comes from Lua scripts (loaded once, run with EVALSHA), never from
read-modify-write round trips, so any number of clients can use the same prefix at once:

* ``publish`` INCRs the channel's sequence key, RPUSHes ``b"<seq> <µs> <data>"`` onto the
  channel's history list, LTRIMs it to ``history_size`` and PUBLISHes the same payload, all
  in one script. Sequence numbers are therefore contiguous across publishers and the
  pub/sub stream arrives in sequence order. The payload is the ASCII decimal seq, a space,
  Redis's clock at publish time in microseconds, a space, then the untouched data bytes.
* ``history`` reads the sequence key and the tail of the list in one script, so it never
  sees a list that a concurrent publish has already moved past the counter.
* ``incr`` with a TTL sets the expiry only when the script created the counter.
* leases store ``b"<token>:<holder>"`` with a PX expiry; tokens come from one INCR counter
  that never expires, bumped only by a new acquisition.

Every key starts with ``prefix``: ``seq:<channel>``, ``hist:<channel>``, ``kv:<key>``,
``lease:<name>`` and ``lease-fence``; the pub/sub channel is ``<prefix>ch:<channel>``.

Failures are bounded. Sockets time out after ``timeout_s``; commands that hit a connection
error or timeout are retried a few times with jittered exponential backoff (redis-py's
``Retry``), each call is capped as a whole at about ``3 * timeout_s + 0.5`` s (``ping`` at
``timeout_s``), and every failure surfaces as :class:`BusError`. A retried ``publish`` or
``incr`` whose first attempt did reach Redis is applied twice (a duplicate message with its
own seq, a counter one step too far): at-least-once, the price of surviving a dropped
connection.

Subscriptions are :mod:`coinlink.bus.redis_subscription`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable
from typing import Any, Final, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript

from coinlink.bus.base import Bus, BusError, Message
from coinlink.bus.redis_subscription import RedisSubscription, decode_payload
from coinlink.redis_calls import BACKEND_ERRORS, describe, raise_swallowed_cancel

_T = TypeVar("_T")

# Three attempts with at most 0.1 + 0.2 s of backoff in between: long enough to ride out a
# stale pooled connection after a restart. redis-py also retries inside connect(), so the
# attempts can multiply; every call is therefore capped as a whole by ``budget_s``, and a
# caller hears of an outage within about 3 * timeout_s + 0.5 s.
_RETRIES: Final = 2
_RETRY_BASE_S: Final = 0.05
_RETRY_CAP_S: Final = 0.5
# A pooled connection idle for longer is PINGed before use, so a dead one is replaced
# before a command is sent on it (which would make the retry ambiguous).
_HEALTH_CHECK_S: Final = 10

_PUBLISH = """
-- KEYS: sequence counter, history list. ARGV: data, history size, pub/sub channel.
-- The payload carries Redis's clock in microseconds: the publish time, for the subscribers'
-- fan-out latency, on one clock for every publisher.
local seq = redis.call('INCR', KEYS[1])
local now = redis.call('TIME')
local payload = string.format('%d ', seq) .. now[1] .. string.format('%06d ', now[2]) .. ARGV[1]
redis.call('RPUSH', KEYS[2], payload)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('PUBLISH', ARGV[3], payload)
return seq
"""

_HISTORY = """
-- KEYS: sequence counter, history list. ARGV: since.
-- Returns {last seq, the newest (last - since) payloads, or fewer when trimmed}.
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = last - tonumber(ARGV[1])
if wanted <= 0 then
  return {last, {}}
end
return {last, redis.call('LRANGE', KEYS[2], -wanted, -1)}
"""

_INCR = """
-- KEYS: counter. ARGV: amount, TTL in ms ('0' for none), applied only on creation.
local created = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if created and ARGV[2] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""

_ACQUIRE = """
-- KEYS: lease, fencing counter. ARGV: holder, TTL in ms.
-- Returns the token, or nil when another holder has the lease.
local current = redis.call('GET', KEYS[1])
if current then
  local sep = string.find(current, ':', 1, true)
  if string.sub(current, sep + 1) ~= ARGV[1] then
    return nil
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(string.sub(current, 1, sep - 1))
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], string.format('%d:', token) .. ARGV[1], 'PX', ARGV[2])
return token
"""

_RENEW = """
-- KEYS: lease. ARGV: '<token>:<holder>', TTL in ms.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
-- KEYS: lease. ARGV: '<token>:<holder>'.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class _Scripts:
    """The scripts, registered on one client (redis-py reloads them after a restart)."""

    def __init__(self, client: Redis) -> None:
        self.publish: AsyncScript = client.register_script(_PUBLISH)
        self.history: AsyncScript = client.register_script(_HISTORY)
        self.incr: AsyncScript = client.register_script(_INCR)
        self.acquire: AsyncScript = client.register_script(_ACQUIRE)
        self.renew: AsyncScript = client.register_script(_RENEW)
        self.release: AsyncScript = client.register_script(_RELEASE)


def _ttl_ms(ttl_s: float) -> int:
    if not math.isfinite(ttl_s) or ttl_s <= 0:
        raise ValueError(f"ttl_s must be a positive number of seconds, not {ttl_s!r}")
    # Rounded up: PX 0 is an error and a lease must never be shorter than asked for.
    return max(1, math.ceil(ttl_s * 1000))


class RedisBus(Bus):
    """The shared bus; see the module docstring."""

    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "coinlink:",
        history_size: int = 100,
        timeout_s: float = 2.0,
    ) -> None:
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        self.url = url
        self.prefix = prefix
        self.history_size = history_size
        self.timeout_s = timeout_s
        self.channel_prefix = prefix + "ch:"
        self.budget_s = timeout_s * (_RETRIES + 1) + _RETRY_CAP_S
        self._client: Redis | None = None
        self._scripts: _Scripts | None = None
        self._subscriptions: set[RedisSubscription] = set()

    # Lifecycle

    async def start(self) -> None:
        """Create the client; connections open on first use.

        Deliberately no PING here: a worker must boot (and report "not ready" through
        :meth:`ping`) while Redis is briefly away, and recover by itself when it returns.
        """
        if self._client is not None:
            return
        client = Redis.from_url(
            self.url,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            health_check_interval=_HEALTH_CHECK_S,
            retry=Retry(
                ExponentialWithJitterBackoff(base=_RETRY_BASE_S, cap=_RETRY_CAP_S),
                retries=_RETRIES,
            ),
            client_name="coinlink-bus",
        )
        self._scripts = _Scripts(client)
        self._client = client

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.close()
        client, self._client, self._scripts = self._client, None, None
        if client is not None:
            with contextlib.suppress(*BACKEND_ERRORS):
                await client.aclose()

    @property
    def redis(self) -> Redis:
        """The underlying client (for subscriptions and tests)."""
        if self._client is None:
            raise RuntimeError("RedisBus is not started (or already closed)")
        return self._client

    @property
    def _lua(self) -> _Scripts:
        if self._scripts is None:
            raise RuntimeError("RedisBus is not started (or already closed)")
        return self._scripts

    async def _run(self, what: str, awaitable: Awaitable[_T]) -> _T:
        try:
            # Cancelling redis-py mid-command is safe: it drops that connection.
            async with asyncio.timeout(self.budget_s):
                result = await awaitable
            raise_swallowed_cancel()
            return result
        except BACKEND_ERRORS as exc:
            raise BusError(f"redis {what} failed: {describe(exc)}") from exc

    async def ping(self) -> None:
        client = self.redis
        try:
            # One budget for the whole call, retries included: readiness wants an answer.
            async with asyncio.timeout(self.timeout_s):
                await client.ping()
            raise_swallowed_cancel()
        except BACKEND_ERRORS as exc:
            raise BusError(f"redis ping failed: {describe(exc)}") from exc

    # Channels

    async def publish(self, channel: str, data: bytes) -> int:
        keys = [f"{self.prefix}seq:{channel}", f"{self.prefix}hist:{channel}"]
        args: list[bytes | str | int] = [data, self.history_size, self.channel_prefix + channel]
        return int(await self._run("publish", self._lua.publish(keys=keys, args=args)))

    async def publish_many(self, items: list[tuple[str, bytes]]) -> list[int]:
        if not items:
            return []

        async def pipelined() -> list[Any]:
            # One round trip; each script call stays atomic on its own.
            pipe = self.redis.pipeline(transaction=False)
            for channel, data in items:
                keys = [f"{self.prefix}seq:{channel}", f"{self.prefix}hist:{channel}"]
                args: list[bytes | str | int] = [
                    data,
                    self.history_size,
                    self.channel_prefix + channel,
                ]
                await self._lua.publish(keys=keys, args=args, client=pipe)
            results: list[Any] = await pipe.execute()
            return results

        return [int(seq) for seq in await self._run("publish_many", pipelined())]

    async def history(self, channel: str, since: int = 0) -> list[Message] | None:
        since = max(since, 0)
        keys = [f"{self.prefix}seq:{channel}", f"{self.prefix}hist:{channel}"]
        last, payloads = await self._run("history", self._lua.history(keys=keys, args=[since]))
        if since >= int(last):
            return []
        try:
            messages = [decode_payload(channel, p) for p in payloads]
        except ValueError as exc:
            raise BusError(str(exc)) from exc
        if not messages or messages[0].seq > since + 1:
            return None
        return [m for m in messages if m.seq > since]

    async def last_seq(self, channel: str) -> int:
        value = await self._run("last_seq", self.redis.get(f"{self.prefix}seq:{channel}"))
        return 0 if value is None else int(value)

    def subscription(self) -> RedisSubscription:
        subscription = RedisSubscription(self)
        self._subscriptions.add(subscription)
        return subscription

    # Key/value

    async def get(self, key: str) -> bytes | None:
        value = await self._run("get", self.redis.get(f"{self.prefix}kv:{key}"))
        if value is None or isinstance(value, bytes):
            return value
        return str(value).encode()  # only with decode_responses, which this client never sets

    async def get_many(self, *keys: str) -> list[bytes | None]:
        values = await self._run("mget", self.redis.mget([f"{self.prefix}kv:{k}" for k in keys]))
        return [v if v is None or isinstance(v, bytes) else str(v).encode() for v in values]

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        px = None if ttl_s is None else _ttl_ms(ttl_s)
        await self._run("set", self.redis.set(f"{self.prefix}kv:{key}", value, px=px))

    async def delete(self, key: str) -> None:
        await self._run("delete", self.redis.delete(f"{self.prefix}kv:{key}"))

    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        px = 0 if ttl_s is None else _ttl_ms(ttl_s)
        keys = [f"{self.prefix}kv:{key}"]
        return int(await self._run("incr", self._lua.incr(keys=keys, args=[amount, px])))

    # Leases

    def _lease_key(self, name: str) -> str:
        return f"{self.prefix}lease:{name}"

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> int | None:
        keys = [self._lease_key(name), f"{self.prefix}lease-fence"]
        args: list[str | int] = [holder, _ttl_ms(ttl_s)]
        token = await self._run("acquire_lease", self._lua.acquire(keys=keys, args=args))
        return None if token is None else int(token)

    async def renew_lease(self, name: str, holder: str, token: int, ttl_s: float) -> bool:
        args: list[str | int] = [f"{token}:{holder}", _ttl_ms(ttl_s)]
        keys = [self._lease_key(name)]
        renewed = await self._run("renew_lease", self._lua.renew(keys=keys, args=args))
        return bool(renewed)

    async def release_lease(self, name: str, holder: str, token: int) -> None:
        keys, args = [self._lease_key(name)], [f"{token}:{holder}"]
        await self._run("release_lease", self._lua.release(keys=keys, args=args))
