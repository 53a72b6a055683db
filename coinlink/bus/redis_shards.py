"""Subscriptions on a Redis Cluster: one connection per shard, merged into one iterator.

With sharded pub/sub (SSUBSCRIBE/SPUBLISH) a message travels only within the shard that
serves its channel's slot, instead of being relayed to every node of the cluster as a
PUBLISH is: publishing scales with the shards. A subscriber must therefore listen on every
shard that serves one of its channels. A :class:`ShardedSubscription` gives each such
shard a :class:`ShardSubscription` (the single-server subscription of
:mod:`coinlink.bus.redis_subscription`, with SSUBSCRIBE, on a connection to the shard's
master) and hands out all their messages through one ``async for``. A worker's hub holds
one, so a worker keeps one connection per shard, however many sockets it serves.

Failover: when a shard's connection fails (its master died), the shard subscription
reconnects with backoff as any subscription does, but refreshes the cluster's slot map
first and connects to whichever node serves its channels' slot by then: once the replica
is promoted, that one. Then it yields :data:`~coinlink.bus.base.RESUBSCRIBED`, and the
consumer fills the gap from history (or, when the promoted replica had not yet received
the last writes, sees the sequence go back and starts the channel over with a snapshot).

Not handled: a resharding that moves a subscribed channel's slot to another shard while
subscribed. The node then drops the channel (an ``sunsubscribe`` push) and the shard
subscription keeps reconnecting to its first channel's node; resharding is an operator's
planned step, done with the instances restarted after it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Final

from redis.asyncio.client import PubSub
from redis.crc import key_slot

from coinlink.bus.base import BusError, QueuedSubscription
from coinlink.bus.redis_subscription import RedisSubscription
from coinlink.redis_calls import BACKEND_ERRORS, describe, raise_swallowed_cancel

if TYPE_CHECKING:
    from coinlink.bus.redis_bus import RedisBus

# Messages read from the shards but not yet taken by the consumer. When it falls behind,
# the shards' connections are no longer read, so the backlog waits in Redis, whose pub/sub
# output-buffer limit disconnects a worker too slow to catch up (it then recovers from
# history), as on a single Redis; the worker's memory stays bounded.
QUEUE_SIZE: Final = 1024


def _by_slot(keys: list[str]) -> list[list[str]]:
    """``keys`` grouped by hash slot: one SSUBSCRIBE may not span slots (CROSSSLOT)."""
    groups: dict[int, list[str]] = {}
    for key in keys:
        groups.setdefault(key_slot(key.encode()), []).append(key)
    return list(groups.values())


class ShardSubscription(RedisSubscription):
    """The channels of one shard, on a connection to its master (``node``, "host:port")."""

    _MESSAGE = "smessage"
    _CONFIRMATION = "ssubscribe"

    def __init__(self, bus: RedisBus, node: str) -> None:
        super().__init__(bus)
        self.node = node

    async def _open(self) -> PubSub:
        cluster = self._bus.cluster_client
        if self._gap:  # the connection was lost: the shard may have a new master
            await cluster.nodes_manager.initialize()
        node = cluster.get_node_from_key(self._key(next(iter(self._channels))))
        if node is None:
            raise BusError("no node of the cluster serves this shard")
        self.node = node.name
        return self._bus.node_client(node.host, int(node.port)).pubsub()

    async def _listen(self, pubsub: PubSub, keys: list[str]) -> None:
        for group in _by_slot(keys):
            await pubsub.ssubscribe(*group)

    async def _stop_listening(self, pubsub: PubSub, keys: list[str]) -> None:
        for group in _by_slot(keys):
            await pubsub.sunsubscribe(*group)


class ShardedSubscription(QueuedSubscription):
    """The channels wanted, each followed on its shard's :class:`ShardSubscription`.

    Messages of one channel keep their order; messages of channels on different shards
    arrive in whatever order their connections deliver them.
    """

    def __init__(self, bus: RedisBus) -> None:
        super().__init__(QUEUE_SIZE)
        self._bus = bus
        self._shards: list[ShardSubscription] = []
        self._shard_of: dict[str, ShardSubscription] = {}
        self._pumps: dict[ShardSubscription, asyncio.Task[None]] = {}
        self._stale = False  # a subscribe failed: the slot map may be out of date

    async def _route(self, channels: list[str]) -> dict[ShardSubscription, list[str]]:
        """``channels`` by the shard subscription that carries (or will carry) each."""
        cluster = self._bus.cluster_client
        try:
            async with asyncio.timeout(self._bus.budget_s):
                if self._stale:
                    await cluster.nodes_manager.initialize()
                    self._stale = False
                else:
                    await cluster.initialize()  # the slot map, on first use only
            raise_swallowed_cancel()
        except BACKEND_ERRORS as exc:
            raise BusError(f"redis cluster unavailable: {describe(exc)}") from exc
        routes: dict[ShardSubscription, list[str]] = {}
        for channel in channels:
            shard = self._shard_of.get(channel)
            if shard is None:
                node = cluster.get_node_from_key(self._bus.keys.channel(channel))
                if node is None:
                    raise BusError(f"no node of the cluster serves channel {channel!r}")
                shard = self._shard(node.name)
            routes.setdefault(shard, []).append(channel)
        return routes

    def _shard(self, node: str) -> ShardSubscription:
        """The shard subscription for ``node``'s channels; a new one when there is none."""
        for shard in self._shards:
            if self._served_by(shard) == node:
                return shard
        shard = ShardSubscription(self._bus, node)
        self._shards.append(shard)
        self._pumps[shard] = asyncio.create_task(self._pump(shard), name="bus-shard")
        return shard

    def _served_by(self, shard: ShardSubscription) -> str:
        """The node that serves ``shard``'s channels by the current slot map. After a
        failover a shard subscription still reconnecting bears its dead master's name;
        its channels' slots are already the promoted replica's, and so is it."""
        channel = next(iter(shard.channels), None)
        if channel is None:
            return shard.node
        node = self._bus.cluster_client.get_node_from_key(self._bus.keys.channel(channel))
        return shard.node if node is None else node.name

    async def _pump(self, shard: ShardSubscription) -> None:
        async for message in shard:
            await self._queue.put(message)  # waits while the consumer is behind

    async def subscribe(self, *channels: str) -> None:
        """Return once every shard concerned has confirmed its channels."""
        if self._closed:
            raise BusError("subscription is closed")
        wanted = list(dict.fromkeys(channels))
        routes = await self._route(wanted)
        added = [c for c in wanted if c not in self._channels]
        self._channels.update(added)
        for shard, on_shard in routes.items():
            for channel in on_shard:
                # A channel stays on the shard subscription that already carries it.
                self._shard_of.setdefault(channel, shard)
        results = await asyncio.gather(
            *(shard.subscribe(*on_shard) for shard, on_shard in routes.items()),
            return_exceptions=True,
        )
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            self._stale = True
            await self.unsubscribe(*added)  # as RedisSubscription does: all or nothing
            raise failure

    async def unsubscribe(self, *channels: str) -> None:
        """Takes effect at once and never raises (see RedisSubscription.unsubscribe)."""
        removed = [c for c in dict.fromkeys(channels) if c in self._channels]
        self._channels.difference_update(removed)
        routes: dict[ShardSubscription, list[str]] = {}
        for channel in removed:
            shard = self._shard_of.pop(channel, None)
            if shard is not None:
                routes.setdefault(shard, []).append(channel)
        for shard, on_shard in routes.items():
            await shard.unsubscribe(*on_shard)
            if not shard.channels:
                await self._retire(shard)

    async def _retire(self, shard: ShardSubscription) -> None:
        if shard in self._shards:
            self._shards.remove(shard)
        pump = self._pumps.pop(shard, None)
        if pump is not None:
            pump.cancel()  # it may be waiting for room in the queue
        await shard.close()
        if pump is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def close(self) -> None:
        """End iteration and close every shard's connection; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._channels.clear()
        self._shard_of.clear()
        self._bus._subscriptions.discard(self)
        for shard in list(self._shards):
            await self._retire(shard)
        self._end()
