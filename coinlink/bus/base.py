"""The bus: what every CoinLink process shares with the others.

One interface, two implementations: :mod:`coinlink.bus.redis_bus` (many workers and instances)
and :mod:`coinlink.bus.memory` (the embedded default, one process). It offers

* **channels**: ``publish`` gives each message the channel's next sequence number (global
  across every publisher, contiguous, starting at 1), keeps the last ``history_size``
  messages of the channel and delivers the message to every current subscriber, in order;
* **key/value** with optional TTL and **atomic counters**;
* **leases** with a fencing token, so exactly one holder runs a singleton job and a stale
  holder can be told apart from the current one by its smaller token.

Payloads are ``bytes`` (already-encoded JSON): the bus never re-encodes them, so a hub can
hand the same bytes to every socket.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


class BusError(Exception):
    """The bus could not do what was asked (backend unreachable or timed out)."""


@dataclass(frozen=True, slots=True)
class Message:
    channel: str
    seq: int
    data: bytes
    published_us: int = field(default=0, compare=False)
    """Wall-clock publish time in microseconds since the epoch (for fan-out latency)."""


@dataclass(frozen=True, slots=True)
class LeaseTry:
    """The answer to one try at a lease: its fencing ``token`` when taken; otherwise ``None``
    and ``held_s``, how long the holder's grant still runs (when to try again, unless the
    holder renews it meanwhile)."""

    token: int | None
    held_s: float = 0.0


RESUBSCRIBED = "<resubscribed>"
"""Channel of the marker ``Message(RESUBSCRIBED, 0, b"")`` a subscription yields after it
had to replace its connection: what was published meanwhile was missed, and a consumer that
cares reads it from :meth:`Bus.history`."""


class Subscription(abc.ABC):
    """A set of channels whose messages arrive through ``async for``; change it at any time.

    Besides the channels' messages, the iterator yields a :data:`RESUBSCRIBED` marker each
    time the subscription recovered from a lost connection.
    """

    @abc.abstractmethod
    async def subscribe(self, *channels: str) -> None: ...

    @abc.abstractmethod
    async def unsubscribe(self, *channels: str) -> None: ...

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[Message]: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


class QueuedSubscription(Subscription, abc.ABC):
    """A subscription whose messages wait in a queue of its own, filled by its backend.

    Messages queued before an unsubscribe do not surface after it; the
    :data:`RESUBSCRIBED` marker always does. ``None`` in the queue ends the iteration.
    """

    def __init__(self, maxsize: int = 0) -> None:
        self._channels: set[str] = set()
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize)
        self._closed = False

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._channels)

    def __aiter__(self) -> QueuedSubscription:
        return self

    async def __anext__(self) -> Message:
        while not self._closed:
            message = await self._queue.get()
            if message is None:
                break
            if message.channel in self._channels or message.channel == RESUBSCRIBED:
                return message
        raise StopAsyncIteration

    def _end(self) -> None:
        """Stop: no channel is wanted any more, nor what was queued for them."""
        self._closed = True
        self._channels.clear()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)


class Bus(abc.ABC):
    """See the module docstring; every method raises :class:`BusError` on backend failure."""

    backend: str

    @abc.abstractmethod
    async def start(self) -> None:
        """Open connections (called once per worker, in a listener)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Return when the backend answers; raise :class:`BusError` otherwise."""

    # Channels
    @abc.abstractmethod
    async def publish(self, channel: str, data: bytes) -> int:
        """Assign the next sequence number, record in history, deliver; return the seq."""

    async def publish_many(self, items: list[tuple[str, bytes]]) -> list[int]:
        """Publish several messages in order (one round trip on Redis); their seqs."""
        return [await self.publish(channel, data) for channel, data in items]

    @abc.abstractmethod
    async def history(self, channel: str, since: int = 0) -> list[Message] | None:
        """Messages with ``seq > since``, oldest first.

        ``None`` when history no longer reaches back to ``since + 1`` (the caller then needs
        a snapshot); ``[]`` when nothing newer exists.
        """

    @abc.abstractmethod
    async def last_seq(self, channel: str) -> int:
        """The channel's latest sequence number (0 before the first publish)."""

    @abc.abstractmethod
    def subscription(self) -> Subscription:
        """A new, empty subscription (a worker's hub needs exactly one)."""

    # Key/value. Keys given the same ``group`` are kept together (on a Redis Cluster: in
    # one hash slot), so a get_many of them is one round trip to one shard. A key is always
    # named with the same group (or none).
    @abc.abstractmethod
    async def get(self, key: str, *, group: str | None = None) -> bytes | None: ...

    @abc.abstractmethod
    async def get_many(self, *keys: str, group: str | None = None) -> list[bytes | None]:
        """Several keys in one round trip, in the order asked."""

    @abc.abstractmethod
    async def set(
        self, key: str, value: bytes, ttl_s: float | None = None, *, group: str | None = None
    ) -> None: ...

    @abc.abstractmethod
    async def delete(self, key: str, *, group: str | None = None) -> None: ...

    @abc.abstractmethod
    async def incr(
        self, key: str, amount: int = 1, ttl_s: float | None = None, *, group: str | None = None
    ) -> int:
        """Atomically add ``amount``; ``ttl_s`` is applied when the counter is created."""

    # Leases
    @abc.abstractmethod
    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> LeaseTry:
        """Take the lease if free (or already ours): its fencing token; else no token and how
        long the other holder's grant still runs, in the same round trip.

        A new acquisition gets a token larger than every earlier one; re-acquiring a lease
        one still holds returns the same token and extends it.
        """

    @abc.abstractmethod
    async def renew_lease(self, name: str, holder: str, token: int, ttl_s: float) -> bool:
        """Extend the lease when ``holder`` still holds it with ``token``."""

    @abc.abstractmethod
    async def release_lease(self, name: str, holder: str, token: int) -> None:
        """Give the lease up (no effect when it has passed to someone else)."""
