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

On a Redis Cluster (a ``redis+cluster://`` URL, see :func:`coinlink.redis_calls.connect`)
a script may only touch keys of one hash slot, so :class:`Keys` puts hash tags in the names:
a channel's ``seq:{<channel>}``, ``hist:{<channel>}`` and its *shard* channel
``ch:{<channel>}`` share the slot of ``<channel>``, and the publish script SPUBLISHes
there (sharded pub/sub: a message travels only within its shard, so publishing scales with
the shards instead of being broadcast to every node). The leases and their fencing counter
share the slot of ``{<prefix>lease}``. A ``publish_many`` is then one round trip per shard
rather than one in all, and only messages of one channel keep their order with each other.
Subscriptions are one connection per shard (:mod:`coinlink.bus.redis_shards`).

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

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.commands.core import AsyncScript

from coinlink.bus.base import Bus, BusError, LeaseTry, Message
from coinlink.bus.redis_shards import ShardedSubscription
from coinlink.bus.redis_subscription import RedisSubscription, decode_payload
from coinlink.redis_calls import (
    BACKEND_ERRORS,
    Client,
    connect,
    describe,
    is_cluster,
    node_url,
    raise_swallowed_cancel,
)

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
-- KEYS: sequence counter, history list. ARGV: data, history size, pub/sub channel, and
-- the command that publishes there (PUBLISH, or SPUBLISH on a cluster).
-- The payload carries Redis's clock in microseconds: the publish time, for the subscribers'
-- fan-out latency, on one clock for every publisher.
local seq = redis.call('INCR', KEYS[1])
local now = redis.call('TIME')
local payload = string.format('%d ', seq) .. now[1] .. string.format('%06d ', now[2]) .. ARGV[1]
redis.call('RPUSH', KEYS[2], payload)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call(ARGV[4], ARGV[3], payload)
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
-- Returns {token, 0}, or {0, ms left of its grant} when another holder has the lease
-- (tokens start at 1).
local current = redis.call('GET', KEYS[1])
if current then
  local sep = string.find(current, ':', 1, true)
  if string.sub(current, sep + 1) ~= ARGV[1] then
    local left = redis.call('PTTL', KEYS[1])
    if left < 0 then left = tonumber(ARGV[2]) end  -- no expiry: never set by CoinLink
    return {0, left}
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {tonumber(string.sub(current, 1, sep - 1)), 0}
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], string.format('%d:', token) .. ARGV[1], 'PX', ARGV[2])
return {token, 0}
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

    def __init__(self, client: Client) -> None:
        self.publish: AsyncScript = client.register_script(_PUBLISH)
        self.history: AsyncScript = client.register_script(_HISTORY)
        self.incr: AsyncScript = client.register_script(_INCR)
        self.acquire: AsyncScript = client.register_script(_ACQUIRE)
        self.renew: AsyncScript = client.register_script(_RENEW)
        self.release: AsyncScript = client.register_script(_RELEASE)


class Keys:
    """The names of a bus's keys and pub/sub channels (see the module docstring)."""

    def __init__(self, prefix: str, *, cluster: bool) -> None:
        if cluster and ("{" in prefix or "}" in prefix):
            raise ValueError("on a Redis Cluster the prefix must not contain { or }")
        self.prefix = prefix
        self.cluster = cluster
        self.publish_command = "SPUBLISH" if cluster else "PUBLISH"
        self._channel_prefix = prefix + "ch:"
        self._lease_prefix = f"{prefix}{{{prefix}lease}}:" if cluster else f"{prefix}lease:"
        self.fence = f"{prefix}{{{prefix}lease}}-fence" if cluster else f"{prefix}lease-fence"

    def _tagged(self, name: str) -> str:
        return f"{{{name}}}" if self.cluster else name

    def seq(self, channel: str) -> str:
        return f"{self.prefix}seq:{self._tagged(channel)}"

    def history(self, channel: str) -> str:
        return f"{self.prefix}hist:{self._tagged(channel)}"

    def channel(self, channel: str) -> str:
        """The pub/sub (on a cluster: shard) channel that carries ``channel``."""
        return self._channel_prefix + self._tagged(channel)

    def channel_name(self, key: object) -> str | None:
        """The bus channel a pub/sub channel name carries; None when it is not ours."""
        prefix = self._channel_prefix.encode()
        if not isinstance(key, bytes) or not key.startswith(prefix):
            return None
        name = key[len(prefix) :]
        if self.cluster:
            if not (name.startswith(b"{") and name.endswith(b"}")):
                return None
            name = name[1:-1]
        return name.decode(errors="surrogateescape")

    def kv(self, key: str, group: str | None = None) -> str:
        """On a cluster a key's group is its hash tag, so a group's keys share a slot; on a
        single Redis names stay as they were (old and new instances can share one)."""
        if group is None or not self.cluster:
            return f"{self.prefix}kv:{key}"
        if "{" in group or "}" in group:
            raise ValueError("a key's group must not contain { or }")
        return f"{self.prefix}kv:{{{group}}}{key}"

    def lease(self, name: str) -> str:
        return self._lease_prefix + name


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
        self.cluster = is_cluster(url)
        self.keys = Keys(prefix, cluster=self.cluster)
        self.budget_s = timeout_s * (_RETRIES + 1) + _RETRY_CAP_S
        self._client: Client | None = None
        self._scripts: _Scripts | None = None
        self._subscriptions: set[RedisSubscription | ShardedSubscription] = set()
        self._node_clients: dict[str, Redis] = {}  # on a cluster: subscriptions' nodes

    # Lifecycle

    async def start(self) -> None:
        """Create the client; connections open on first use.

        Deliberately no PING here: a worker must boot (and report "not ready" through
        :meth:`ping`) while Redis is briefly away, and recover by itself when it returns.
        """
        if self._client is not None:
            return
        client = connect(
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
        nodes, self._node_clients = list(self._node_clients.values()), {}
        for each in [*nodes, *([client] if client is not None else [])]:
            with contextlib.suppress(*BACKEND_ERRORS):
                await each.aclose()

    @property
    def redis(self) -> Client:
        """The underlying client (for subscriptions and tests)."""
        if self._client is None:
            raise RuntimeError("RedisBus is not started (or already closed)")
        return self._client

    @property
    def cluster_client(self) -> RedisCluster:
        client = self.redis
        if not isinstance(client, RedisCluster):
            raise RuntimeError("RedisBus is not on a Redis Cluster")
        return client

    def node_client(self, host: str, port: int) -> Redis:
        """A client of one cluster node, for the shard subscriptions' connections: the
        URL's credentials and options, that node's address, and no retries (a lost
        subscription connection is replaced by the subscription, which then knows)."""
        name = f"{host}:{port}"
        client = self._node_clients.get(name)
        if client is None:
            client = self._node_clients[name] = Redis.from_url(
                node_url(self.url, name),
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
                retry=Retry(NoBackoff(), retries=0),
                client_name="coinlink-bus",
            )
        return client

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

    def _publish_call(self, channel: str, data: bytes) -> tuple[list[str], list[Any]]:
        keys = self.keys
        args = [data, self.history_size, keys.channel(channel), keys.publish_command]
        return [keys.seq(channel), keys.history(channel)], args

    async def publish(self, channel: str, data: bytes) -> int:
        keys, args = self._publish_call(channel, data)
        return int(await self._run("publish", self._lua.publish(keys=keys, args=args)))

    async def publish_many(self, items: list[tuple[str, bytes]]) -> list[int]:
        if not items:
            return []
        client = self.redis
        if isinstance(client, RedisCluster):
            return await self._publish_per_channel(items)

        async def pipelined() -> list[Any]:
            # One round trip; each script call stays atomic on its own. The block hands the
            # connection back however it ends: a pipeline cancelled mid-execute (a stopping
            # ingest task) was left holding it, and asyncio logged "Unclosed Pipeline
            # client" at error level whenever the garbage collector found it.
            async with client.pipeline(transaction=False) as pipe:
                for channel, data in items:
                    keys, args = self._publish_call(channel, data)
                    await self._lua.publish(keys=keys, args=args, client=pipe)
                results: list[Any] = await pipe.execute()
            return results

        return [int(seq) for seq in await self._run("publish_many", pipelined())]

    async def _publish_per_channel(self, items: list[tuple[str, bytes]]) -> list[int]:
        """On a cluster: each channel's messages in order, the channels side by side (a
        cluster pipeline could not reload a script a promoted replica lacks)."""
        positions: dict[str, list[int]] = {}
        for position, (channel, _) in enumerate(items):
            positions.setdefault(channel, []).append(position)
        seqs = [0] * len(items)

        async def in_order(channel: str, where: list[int]) -> None:
            for position in where:
                seqs[position] = await self.publish(channel, items[position][1])

        results = await asyncio.gather(
            *(in_order(channel, where) for channel, where in positions.items()),
            return_exceptions=True,
        )
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            raise failure  # a BusError, as from one publish
        return seqs

    async def history(self, channel: str, since: int = 0) -> list[Message] | None:
        since = max(since, 0)
        keys = [self.keys.seq(channel), self.keys.history(channel)]
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
        value = await self._run("last_seq", self.redis.get(self.keys.seq(channel)))
        return 0 if value is None else int(value)

    def subscription(self) -> RedisSubscription | ShardedSubscription:
        subscription: RedisSubscription | ShardedSubscription
        subscription = ShardedSubscription(self) if self.cluster else RedisSubscription(self)
        self._subscriptions.add(subscription)
        return subscription

    # Key/value

    async def get(self, key: str, *, group: str | None = None) -> bytes | None:
        value = await self._run("get", self.redis.get(self.keys.kv(key, group)))
        if value is None or isinstance(value, bytes):
            return value
        return str(value).encode()  # only with decode_responses, which this client never sets

    async def get_many(self, *keys: str, group: str | None = None) -> list[bytes | None]:
        names = [self.keys.kv(k, group) for k in keys]
        client = self.redis
        if isinstance(client, RedisCluster):  # one MGET per slot: one in all for a group
            values = await self._run("mget", client.mget_nonatomic(names))
        else:
            values = await self._run("mget", client.mget(names))
        return [v if v is None or isinstance(v, bytes) else str(v).encode() for v in values]

    async def set(
        self, key: str, value: bytes, ttl_s: float | None = None, *, group: str | None = None
    ) -> None:
        px = None if ttl_s is None else _ttl_ms(ttl_s)
        await self._run("set", self.redis.set(self.keys.kv(key, group), value, px=px))

    async def delete(self, key: str, *, group: str | None = None) -> None:
        await self._run("delete", self.redis.delete(self.keys.kv(key, group)))

    async def incr(
        self, key: str, amount: int = 1, ttl_s: float | None = None, *, group: str | None = None
    ) -> int:
        px = 0 if ttl_s is None else _ttl_ms(ttl_s)
        keys = [self.keys.kv(key, group)]
        return int(await self._run("incr", self._lua.incr(keys=keys, args=[amount, px])))

    # Leases

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> LeaseTry:
        keys = [self.keys.lease(name), self.keys.fence]
        args: list[str | int] = [holder, _ttl_ms(ttl_s)]
        token, left_ms = await self._run("acquire_lease", self._lua.acquire(keys=keys, args=args))
        return LeaseTry(int(token) or None, int(left_ms) / 1000)

    async def renew_lease(self, name: str, holder: str, token: int, ttl_s: float) -> bool:
        args: list[str | int] = [f"{token}:{holder}", _ttl_ms(ttl_s)]
        keys = [self.keys.lease(name)]
        renewed = await self._run("renew_lease", self._lua.renew(keys=keys, args=args))
        return bool(renewed)

    async def release_lease(self, name: str, holder: str, token: int) -> None:
        keys, args = [self.keys.lease(name)], [f"{token}:{holder}"]
        await self._run("release_lease", self._lua.release(keys=keys, args=args))
