"""The in-process bus: one worker, no Redis, the embedded default.

Everything lives in this process and every method runs without an ``await`` in between its
reads and writes, so each operation is atomic with respect to the event loop; that is what
gives publishes their contiguous sequence numbers and subscribers their publish order,
exactly as the Lua scripts of :mod:`coinlink.bus.redis_bus` do for many processes.

* channels: a counter and a ``deque(maxlen=history_size)`` per channel; ``publish`` puts the
  message straight into the queue of every subscription that holds the channel;
* key/value and counters: ``(value, deadline)`` pairs, the deadline on the monotonic clock,
  checked (and the entry dropped) when read, as Redis does for keys nobody reads;
* leases: ``(holder, token, deadline)`` per name and one fencing counter for all of them,
  never reset, so a new acquisition always outnumbers every earlier one.

Sequence numbers, history, TTL and lease semantics match the Redis bus in everything the
contract suite (``tests/integration/test_bus_contract.py``) checks.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

from coinlink.bus.base import Bus, BusError, LeaseTry, Message, QueuedSubscription


def _deadline(ttl_s: float) -> float:
    if not math.isfinite(ttl_s) or ttl_s <= 0:
        raise ValueError(f"ttl_s must be a positive number of seconds, not {ttl_s!r}")
    return time.monotonic() + ttl_s


def _optional_deadline(ttl_s: float | None) -> float | None:
    return None if ttl_s is None else _deadline(ttl_s)


def _alive(deadline: float | None) -> bool:
    return deadline is None or time.monotonic() < deadline


@dataclass(slots=True)
class _Lease:
    holder: str
    token: int
    deadline: float


class MemorySubscription(QueuedSubscription):
    """Messages of the subscribed channels, in publish order, through ``async for``.

    The queue is unbounded on purpose: ``publish`` must neither wait for a slow consumer
    (publisher and consumer share one event loop, so one stalled hub would stall every feed)
    nor drop messages silently. The only consumer is a worker's hub, which drains it at once
    and applies back-pressure per socket, where dropping a slow client is the right answer.
    """

    def __init__(self, bus: MemoryBus) -> None:
        super().__init__()
        self._bus = bus

    def _deliver(self, message: Message) -> None:
        if message.channel in self._channels:
            self._queue.put_nowait(message)

    async def subscribe(self, *channels: str) -> None:
        if self._closed:
            raise BusError("subscription is closed")
        self._channels.update(channels)

    async def unsubscribe(self, *channels: str) -> None:
        self._channels.difference_update(channels)

    async def close(self) -> None:
        if self._closed:
            return
        self._bus._subscriptions.discard(self)
        self._end()


class MemoryBus(Bus):
    """The bus for a single process; see the module docstring."""

    backend = "memory"

    def __init__(self, *, history_size: int = 100) -> None:
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        self.history_size = history_size
        self._seq: dict[str, int] = {}
        self._history: dict[str, deque[Message]] = {}
        self._subscriptions: set[MemorySubscription] = set()
        self._kv: dict[str, tuple[bytes, float | None]] = {}
        self._leases: dict[str, _Lease] = {}
        self._fence = 0

    async def start(self) -> None:
        """Nothing to open; present for the interface."""

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.close()

    async def ping(self) -> None:
        """Always answers: the backend is this process."""

    # Channels

    async def publish(self, channel: str, data: bytes) -> int:
        seq = self._seq.get(channel, 0) + 1
        self._seq[channel] = seq
        message = Message(channel, seq, bytes(data), time.time_ns() // 1000)
        history = self._history.get(channel)
        if history is None:
            history = self._history[channel] = deque(maxlen=self.history_size)
        history.append(message)
        for subscription in self._subscriptions:
            subscription._deliver(message)
        return seq

    async def history(self, channel: str, since: int = 0) -> list[Message] | None:
        since = max(since, 0)
        if since >= self._seq.get(channel, 0):
            return []
        kept = self._history.get(channel)
        if not kept or kept[0].seq > since + 1:
            return None
        return [m for m in kept if m.seq > since]

    async def last_seq(self, channel: str) -> int:
        return self._seq.get(channel, 0)

    def subscription(self) -> MemorySubscription:
        subscription = MemorySubscription(self)
        self._subscriptions.add(subscription)
        return subscription

    # Key/value

    def _live(self, key: str) -> tuple[bytes, float | None] | None:
        entry = self._kv.get(key)
        if entry is not None and not _alive(entry[1]):
            del self._kv[key]
            return None
        return entry

    # One process has no slots: ``group`` changes nothing here.

    async def get(self, key: str, *, group: str | None = None) -> bytes | None:
        entry = self._live(key)
        return None if entry is None else entry[0]

    async def get_many(self, *keys: str, group: str | None = None) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def set(
        self, key: str, value: bytes, ttl_s: float | None = None, *, group: str | None = None
    ) -> None:
        # Like Redis SET: a set without a TTL also removes an earlier one.
        self._kv[key] = (bytes(value), _optional_deadline(ttl_s))

    async def delete(self, key: str, *, group: str | None = None) -> None:
        self._kv.pop(key, None)

    async def incr(
        self, key: str, amount: int = 1, ttl_s: float | None = None, *, group: str | None = None
    ) -> int:
        created_deadline = _optional_deadline(ttl_s)
        entry = self._live(key)
        if entry is None:
            self._kv[key] = (str(amount).encode(), created_deadline)
            return amount
        value, deadline = entry
        try:
            current = int(value)
        except ValueError:
            # Redis answers INCRBY on a non-integer value with an error; so do we.
            raise BusError(f"value of {key!r} is not an integer") from None
        current += amount
        self._kv[key] = (str(current).encode(), deadline)
        return current

    # Leases

    def _lease(self, name: str) -> _Lease | None:
        lease = self._leases.get(name)
        if lease is not None and not _alive(lease.deadline):
            del self._leases[name]
            return None
        return lease

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> LeaseTry:
        deadline = _deadline(ttl_s)
        lease = self._lease(name)
        if lease is not None:
            if lease.holder != holder:
                return LeaseTry(None, max(0.0, lease.deadline - time.monotonic()))
            lease.deadline = deadline
            return LeaseTry(lease.token)
        self._fence += 1
        self._leases[name] = _Lease(holder, self._fence, deadline)
        return LeaseTry(self._fence)

    async def renew_lease(self, name: str, holder: str, token: int, ttl_s: float) -> bool:
        deadline = _deadline(ttl_s)
        lease = self._lease(name)
        if lease is None or lease.holder != holder or lease.token != token:
            return False
        lease.deadline = deadline
        return True

    async def release_lease(self, name: str, holder: str, token: int) -> None:
        lease = self._lease(name)
        if lease is not None and lease.holder == holder and lease.token == token:
            del self._leases[name]
