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

A :class:`RedisSubscription` owns one pub/sub connection and outlives Redis restarts: when
the connection fails, its iterator reconnects with capped, jittered exponential backoff and
subscribes again to the channels wanted at that moment; the consumer sees no exception.
A connection that goes silent (half-open, no FIN/RST) is found by a keepalive PING.
Messages published while it was disconnected are not replayed; the consumer notices the
gap in the sequence numbers and fills it from :meth:`RedisBus.history`. (Sequence numbers
live in Redis: a restart that loses its data starts them at 1 again.)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import Awaitable
from typing import Any, Final, TypeVar

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from coinlink.bus.base import RESUBSCRIBED, Bus, BusError, Message, Subscription

log = structlog.get_logger(logger_name="coinlink.bus")

_T = TypeVar("_T")

# redis-py wraps socket failures in RedisError, but a few paths (and asyncio.timeout) raise
# the builtin ones; all three mean "the backend did not answer".
_BACKEND_ERRORS: Final = (RedisError, OSError, TimeoutError)

# Three attempts with at most 0.1 + 0.2 s of backoff in between: long enough to ride out a
# stale pooled connection after a restart. redis-py also retries inside connect(), so the
# attempts can multiply; every call is therefore capped as a whole by ``_budget_s``, and a
# caller hears of an outage within about 3 * timeout_s + 0.5 s.
_RETRIES: Final = 2
_RETRY_BASE_S: Final = 0.05
_RETRY_CAP_S: Final = 0.5
# A pooled connection idle for longer is PINGed before use, so a dead one is replaced
# before a command is sent on it (which would make the retry ambiguous).
_HEALTH_CHECK_S: Final = 10

# One read of the pub/sub connection waits at most this long; it bounds how long close() and
# a reconnect wait for the reader to let go of the connection. Each poll costs a wake-up:
# at 0.1 s the subscriptions were half of an idle server's CPU (18 -> 11 ms/s at 1 s).
# A SUBSCRIBE's confirmation never waits for it: the reader returns as soon as it arrives.
_POLL_S: Final = 1.0
# Reconnect backoff of a subscription: 0.1 s doubling to 2 s, each drawn from [d/2, d].
_RECONNECT_MIN_S: Final = 0.1
_RECONNECT_MAX_S: Final = 2.0
# A pub/sub connection silent for this long is PINGed; no answer within timeout_s means it
# is half-open (peer gone without a FIN/RST) and is replaced.
_KEEPALIVE_S: Final = 5.0
_KEEPALIVE_MESSAGE: Final = "coinlink-keepalive"

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


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


def _ttl_ms(ttl_s: float) -> int:
    if not math.isfinite(ttl_s) or ttl_s <= 0:
        raise ValueError(f"ttl_s must be a positive number of seconds, not {ttl_s!r}")
    # Rounded up: PX 0 is an error and a lease must never be shorter than asked for.
    return max(1, math.ceil(ttl_s * 1000))


def decode_payload(channel: str, payload: bytes) -> Message:
    """``b"<seq> <published µs> <data>"`` -> Message; ``ValueError`` when it is not ours."""
    head, sep, rest = payload.partition(b" ")
    stamp, sep2, data = rest.partition(b" ")
    if not sep or not sep2 or not head.isdigit() or not stamp.isdigit():
        raise ValueError(f"malformed payload on channel {channel!r}")
    return Message(channel, int(head), data, int(stamp))


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
        self._budget_s = timeout_s * (_RETRIES + 1) + _RETRY_CAP_S
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
            with contextlib.suppress(*_BACKEND_ERRORS):
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
            async with asyncio.timeout(self._budget_s):
                return await awaitable
        except _BACKEND_ERRORS as exc:
            raise BusError(f"redis {what} failed: {_describe(exc)}") from exc

    async def ping(self) -> None:
        client = self.redis
        try:
            # One budget for the whole call, retries included: readiness wants an answer.
            async with asyncio.timeout(self.timeout_s):
                await client.ping()
        except _BACKEND_ERRORS as exc:
            raise BusError(f"redis ping failed: {_describe(exc)}") from exc

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


class RedisSubscription(Subscription):
    """One pub/sub connection carrying the wanted channels, iterated with ``async for``.

    ``_channels`` is the truth: what the consumer wants. The connection follows it: a
    SUBSCRIBE or UNSUBSCRIBE is sent on every change, and whenever the connection is
    unusable (or nothing is wanted) it is dropped and, when needed, replaced by a new one
    subscribed to the whole set. Messages are filtered against ``_channels`` when handed
    out, so an ``unsubscribe`` takes effect the moment it returns, whatever is in flight.

    Reads are serialised by ``_read_lock`` (redis-py allows one reader per connection) and
    always time out after :data:`_POLL_S`; commands are serialised by ``_write_lock`` and may
    be sent while a read waits, so a subscribe on a healthy connection does not wait for a
    poll. Replacing the connection takes both locks, always in the order read, write.
    """

    def __init__(self, bus: RedisBus) -> None:
        self._bus = bus
        self._channels: set[str] = set()
        self._confirmed: set[str] = set()  # SUBSCRIBE acknowledged on this connection
        self._pubsub: PubSub | None = None
        self._broken = False
        self._gap = False  # a connection was lost: tell the consumer once resubscribed
        self._buffer: deque[Message] = deque()
        self._read_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._closed_event = asyncio.Event()
        self._failures = 0
        self._last_rx = 0.0
        self._ping_sent: float | None = None

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._channels)

    @property
    def _closed(self) -> bool:
        return self._closed_event.is_set()

    def _key(self, channel: str) -> str:
        return self._bus.channel_prefix + channel

    def _name(self, key: object) -> str | None:
        prefix = self._bus.channel_prefix.encode()
        if isinstance(key, bytes) and key.startswith(prefix):
            return key[len(prefix) :].decode(errors="surrogateescape")
        return None

    # Changing the channel set

    async def subscribe(self, *channels: str) -> None:
        """Return once Redis has confirmed every channel, so a publish after it is seen."""
        if self._closed:
            raise BusError("subscription is closed")
        wanted = list(dict.fromkeys(channels))
        added = [c for c in wanted if c not in self._channels]
        self._channels.update(added)
        self._changed.set()
        try:
            if added and not await self._send(subscribe=True, channels=added):
                await self._resync()
            await self._await_confirmed(wanted)
        except BaseException:
            # Undo, so the set stays what the caller believes; a confirmation that still
            # arrives for these channels is ignored and never delivers a message.
            self._channels.difference_update(added)
            self._confirmed.difference_update(added)
            raise

    async def unsubscribe(self, *channels: str) -> None:
        """Takes effect locally at once and never raises.

        When Redis cannot be told, the connection is marked broken, and the next read or
        subscribe replaces it with one subscribed only to what is still wanted.
        """
        removed = [c for c in dict.fromkeys(channels) if c in self._channels]
        if not removed:
            return
        self._channels.difference_update(removed)
        self._confirmed.difference_update(removed)
        try:
            # With nothing left, the connection is dropped rather than kept idle.
            if self._channels and await self._send(subscribe=False, channels=removed):
                return
            await self._resync()
        except BusError:
            pass

    async def _send(self, *, subscribe: bool, channels: list[str]) -> bool:
        """SUBSCRIBE/UNSUBSCRIBE on the current connection; False when there is none."""
        async with self._write_lock:
            pubsub = self._pubsub
            if pubsub is None or self._broken:
                return False
            keys = [self._key(c) for c in channels]
            try:
                async with asyncio.timeout(self._bus._budget_s):
                    if subscribe:
                        await pubsub.subscribe(*keys)
                    else:
                        await pubsub.unsubscribe(*keys)
            except Exception as exc:
                self._broken = True
                raise BusError(f"redis subscribe failed: {_describe(exc)}") from exc
            except BaseException:
                self._broken = True  # interrupted mid-command: the stream may be torn
                raise
            return True

    async def _await_confirmed(self, channels: list[str]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._bus.timeout_s
        while True:
            if self._closed:
                raise BusError("subscription is closed")
            if all(c in self._confirmed or c not in self._channels for c in channels):
                return
            if self._needs_resync():
                await self._resync()
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise BusError(f"redis did not confirm SUBSCRIBE within {self._bus.timeout_s} s")
            # Whoever holds the read lock (usually the iterator) records the confirmation.
            async with self._read_lock:
                if not all(c in self._confirmed or c not in self._channels for c in channels):
                    await self._read_once(min(remaining, _POLL_S))

    # The connection

    def _needs_resync(self) -> bool:
        if self._broken:
            return True
        return (self._pubsub is None) == bool(self._channels)

    async def _resync(self) -> None:
        """Make the connection match ``_channels``: drop it, and open a new one if needed."""
        async with self._read_lock, self._write_lock:
            if not self._needs_resync():
                return
            await self._drop()
            if self._closed or not self._channels:
                return
            pubsub = self._bus.redis.pubsub()
            self._pubsub = pubsub
            try:
                async with asyncio.timeout(self._bus._budget_s):
                    await pubsub.subscribe(*(self._key(c) for c in self._channels))
            except Exception as exc:
                self._broken = True
                raise BusError(f"redis subscribe failed: {_describe(exc)}") from exc
            except BaseException:
                self._broken = True
                raise
            self._last_rx = time.monotonic()
            if self._gap:
                self._gap = False
                self._buffer.append(Message(RESUBSCRIBED, 0, b""))

    async def _drop(self) -> None:
        """Close the connection (caller holds both locks)."""
        pubsub, self._pubsub = self._pubsub, None
        self._gap = self._gap or (self._broken and pubsub is not None)
        self._broken = False
        self._confirmed.clear()
        self._ping_sent = None
        if pubsub is not None:
            # The connection is being thrown away; how it fails to close does not matter.
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _read_once(self, wait_s: float) -> None:
        """Read at most one frame (caller holds the read lock); BusError when it failed."""
        pubsub = self._pubsub
        if pubsub is None or self._broken:
            return
        try:
            raw: dict[str, Any] | None = await pubsub.get_message(timeout=wait_s)
        except asyncio.CancelledError:
            raise  # a consumer's timeout: the parser keeps partial frames, the link is fine
        except Exception as exc:
            # Not only RedisError: a connection torn down under a read can fail in odd ways,
            # and whatever it was, a new connection is the cure.
            self._broken = True
            raise BusError(f"redis subscription read failed: {_describe(exc)}") from exc
        now = time.monotonic()
        if raw is None:
            await self._keepalive(pubsub, now)
            return
        self._last_rx = now
        self._ping_sent = None
        if self._failures:
            log.info("bus.subscription.restored", failures=self._failures)
            self._failures = 0
        kind = raw.get("type")
        name = self._name(raw.get("channel"))
        if name is None:
            return
        if kind == "message":
            data = raw.get("data")
            if isinstance(data, bytes):
                with contextlib.suppress(ValueError):  # not a bus payload: not for us
                    self._buffer.append(decode_payload(name, data))
        elif kind == "subscribe" and name in self._channels:
            self._confirmed.add(name)

    async def _keepalive(self, pubsub: PubSub, now: float) -> None:
        if self._ping_sent is not None:
            if now - self._ping_sent > self._bus.timeout_s:
                self._broken = True
                raise BusError("redis subscription connection does not answer")
            return
        if now - self._last_rx < _KEEPALIVE_S:
            return
        async with self._write_lock:
            if self._pubsub is not pubsub or self._broken:
                return
            try:
                async with asyncio.timeout(self._bus._budget_s):
                    await pubsub.ping(_KEEPALIVE_MESSAGE)
            except Exception as exc:
                self._broken = True
                raise BusError(f"redis subscription ping failed: {_describe(exc)}") from exc
        self._ping_sent = now

    # Iteration

    def __aiter__(self) -> RedisSubscription:
        return self

    async def __anext__(self) -> Message:
        while not self._closed:
            while self._buffer:
                message = self._buffer.popleft()
                if message.channel in self._channels or message.channel == RESUBSCRIBED:
                    return message
            if self._needs_resync():
                await self._reconnect()
                continue
            if not self._channels:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._changed.wait()
                continue
            try:
                async with self._read_lock:
                    await self._read_once(_POLL_S)
            except BusError as exc:
                self._failures += 1
                log.warning("bus.subscription.lost", error=str(exc))
        raise StopAsyncIteration

    async def _reconnect(self) -> None:
        if self._failures:
            # Equal jitter: spread the herd of workers, but keep a floor so none spins.
            delay = min(_RECONNECT_MAX_S, _RECONNECT_MIN_S * 2 ** (self._failures - 1))
            delay = delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 (not crypto)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closed_event.wait()
        try:
            await self._resync()
        except BusError as exc:
            self._failures += 1
            log.info("bus.subscription.reconnect_failed", error=str(exc), failures=self._failures)

    async def close(self) -> None:
        """End iteration (within one poll) and close the connection; idempotent."""
        if self._closed:
            return
        self._closed_event.set()
        self._changed.set()
        self._channels.clear()
        self._buffer.clear()
        self._bus._subscriptions.discard(self)
        async with self._read_lock, self._write_lock:
            await self._drop()
