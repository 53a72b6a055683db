"""The subscription side of the Redis bus: one pub/sub connection, iterated with ``async for``.

A :class:`RedisSubscription` owns one pub/sub connection and outlives Redis restarts: when
the connection fails, its iterator reconnects with capped, jittered exponential backoff and
subscribes again to the channels wanted at that moment; the consumer sees no exception.
A connection that goes silent (half-open, no FIN/RST) is found by a keepalive PING.
Messages published while it was disconnected are not replayed; the consumer notices the
gap in the sequence numbers and fills it from :meth:`RedisBus.history`. (Sequence numbers
live in Redis: a restart that loses its data starts them at 1 again.)

Payloads are ``b"<seq> <published µs> <data>"`` (:func:`decode_payload`), as
:mod:`coinlink.bus.redis_bus` publishes them.

On a Redis Cluster the same class serves each shard, with sharded pub/sub
(:mod:`coinlink.bus.redis_shards` overrides what differs: where the connection goes, the
commands and the message types).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import structlog
from redis.asyncio.client import PubSub

from coinlink import backoff
from coinlink.beat import until_beat
from coinlink.bus.base import RESUBSCRIBED, BusError, Message, Subscription
from coinlink.redis_calls import describe, raise_swallowed_cancel

if TYPE_CHECKING:
    from coinlink.bus.redis_bus import RedisBus

log = structlog.get_logger(logger_name="coinlink.bus")

# One read of the pub/sub connection waits at most this long; it bounds how long close() and
# a reconnect wait for the reader to let go of the connection. Each poll costs a wake-up:
# at 0.1 s the subscriptions were half of an idle server's CPU (18 -> 11 ms/s at 1 s).
# A SUBSCRIBE's confirmation never waits for it: the reader returns as soon as it arrives.
_POLL_S: Final = 1.0
# Reconnect backoff of a subscription (coinlink.backoff): 0.1 s doubling to 2 s. Short,
# because while it waits the worker's sockets get no updates.
_RECONNECT_MIN_S: Final = 0.1
_RECONNECT_MAX_S: Final = 2.0
# A pub/sub connection silent for this long is PINGed; no answer within timeout_s means it
# is half-open (peer gone without a FIN/RST) and is replaced.
_KEEPALIVE_S: Final = 5.0
_KEEPALIVE_MESSAGE: Final = "coinlink-keepalive"


def decode_payload(channel: str, payload: bytes) -> Message:
    """``b"<seq> <published µs> <data>"`` -> Message; ``ValueError`` when it is not ours."""
    head, sep, rest = payload.partition(b" ")
    stamp, sep2, data = rest.partition(b" ")
    if not sep or not sep2 or not head.isdigit() or not stamp.isdigit():
        raise ValueError(f"malformed payload on channel {channel!r}")
    return Message(channel, int(head), data, int(stamp))


class RedisSubscription(Subscription):
    """One pub/sub connection carrying the wanted channels, iterated with ``async for``.

    ``_channels`` is the truth: what the consumer wants. The connection follows it: a
    SUBSCRIBE or UNSUBSCRIBE is sent on every change, and whenever the connection is
    unusable (or nothing is wanted) it is dropped and, when needed, replaced by a new one
    subscribed to the whole set. Messages are filtered against ``_channels`` when handed
    out, so an ``unsubscribe`` takes effect the moment it returns, whatever is in flight.

    Reads are serialised by ``_read_lock`` (redis-py allows one reader per connection) and
    always time out within :data:`_POLL_S` (at its next beat: :mod:`coinlink.beat`);
    commands are serialised by ``_write_lock`` and may be sent while a read waits, so a
    subscribe on a healthy connection does not wait for a poll. Replacing the connection
    takes both locks, always in the order read, write.
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
        return self._bus.keys.channel(channel)

    # What differs on a cluster's shard (coinlink.bus.redis_shards.ShardSubscription)

    _MESSAGE = "message"
    _CONFIRMATION = "subscribe"

    async def _open(self) -> PubSub:
        """A new pub/sub connection (opened by its first command)."""
        return self._bus.redis.pubsub()

    async def _listen(self, pubsub: PubSub, keys: list[str]) -> None:
        await pubsub.subscribe(*keys)

    async def _stop_listening(self, pubsub: PubSub, keys: list[str]) -> None:
        await pubsub.unsubscribe(*keys)

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
                async with asyncio.timeout(self._bus.budget_s):
                    if subscribe:
                        await self._listen(pubsub, keys)
                    else:
                        await self._stop_listening(pubsub, keys)
                raise_swallowed_cancel()
            except Exception as exc:
                self._broken = True
                raise BusError(f"redis subscribe failed: {describe(exc)}") from exc
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
            try:
                async with asyncio.timeout(self._bus.budget_s):
                    pubsub = self._pubsub = await self._open()
                    await self._listen(pubsub, [self._key(c) for c in self._channels])
                raise_swallowed_cancel()
            except Exception as exc:
                self._broken = True
                raise BusError(f"redis subscribe failed: {describe(exc)}") from exc
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
            raise_swallowed_cancel()
        except asyncio.CancelledError:
            raise  # a consumer's timeout: the parser keeps partial frames, the link is fine
        except Exception as exc:
            # Not only RedisError: a connection torn down under a read can fail in odd ways,
            # and whatever it was, a new connection is the cure.
            self._broken = True
            raise BusError(f"redis subscription read failed: {describe(exc)}") from exc
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
        name = self._bus.keys.channel_name(raw.get("channel"))
        if name is None:
            return
        if kind == self._MESSAGE:
            data = raw.get("data")
            if isinstance(data, bytes):
                with contextlib.suppress(ValueError):  # not a bus payload: not for us
                    self._buffer.append(decode_payload(name, data))
        elif kind == self._CONFIRMATION and name in self._channels:
            self._confirmed.add(name)
        elif kind == "sunsubscribe" and name in self._channels:
            # The node no longer serves the channel's slot (moved elsewhere): reconnect.
            self._broken = True
            raise BusError(f"redis dropped shard channel {name!r}")

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
                async with asyncio.timeout(self._bus.budget_s):
                    await pubsub.ping(_KEEPALIVE_MESSAGE)
                raise_swallowed_cancel()
            except Exception as exc:
                self._broken = True
                raise BusError(f"redis subscription ping failed: {describe(exc)}") from exc
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
                    await self._read_once(until_beat(_POLL_S))
            except BusError as exc:
                self._failures += 1
                log.warning("bus.subscription.lost", error=str(exc))
        raise StopAsyncIteration

    async def _reconnect(self) -> None:
        if self._failures:
            delay = backoff.delay(self._failures, base_s=_RECONNECT_MIN_S, cap_s=_RECONNECT_MAX_S)
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
