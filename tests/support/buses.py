"""The in-process bus with the failures of a real Redis, for tests of what must survive them.

Redis loses pub/sub messages only while a subscription reconnects, redelivers nothing
except around such a reconnect, and forgets every channel when it restarts empty; none of
that can be timed in a unit test against a real server, so :class:`FaultyBus` (the real
:class:`~coinlink.bus.MemoryBus` underneath) does each on request.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from coinlink.bus import RESUBSCRIBED, BusError, MemoryBus, Message


class FaultyBus(MemoryBus):
    down = False
    """While True every call raises :class:`BusError`, as RedisBus does once Redis is away."""

    def __init__(self, *, history_size: int = 100) -> None:
        super().__init__(history_size=history_size)
        self._held: dict[str, asyncio.Event] = {}
        self.waiting: Counter[str] = Counter()  # publishes held, by channel

    def _check(self) -> None:
        if self.down:
            raise BusError("the bus is down (a test's outage)")

    async def publish(self, channel: str, data: bytes) -> int:
        self._check()
        gate = self._held.get(channel)
        if gate is not None:
            self.waiting[channel] += 1
            try:
                await gate.wait()
            finally:
                self.waiting[channel] -= 1
        return await super().publish(channel, data)

    def hold(self, channel: str) -> None:
        """Publishes on ``channel`` wait until :meth:`release` (a slow round trip)."""
        self._held[channel] = asyncio.Event()

    def release(self, channel: str) -> None:
        self._held.pop(channel).set()

    async def last_seq(self, channel: str) -> int:
        self._check()
        return await super().last_seq(channel)

    async def get_many(self, *keys: str, group: str | None = None) -> list[bytes | None]:
        self._check()
        return await super().get_many(*keys, group=group)

    async def incr(
        self, key: str, amount: int = 1, ttl_s: float | None = None, *, group: str | None = None
    ) -> int:
        self._check()
        return await super().incr(key, amount, ttl_s, group=group)

    async def set(
        self, key: str, value: bytes, ttl_s: float | None = None, *, group: str | None = None
    ) -> None:
        self._check()
        await super().set(key, value, ttl_s, group=group)

    # -- what a reconnecting subscription and a restarted Redis do ----------------------

    async def publish_unseen(self, channel: str, data: bytes) -> int:
        """Numbered and kept in history, but lost on the way to every subscriber."""
        subscriptions, self._subscriptions = self._subscriptions, set()
        try:
            return await super().publish(channel, data)
        finally:
            self._subscriptions = subscriptions

    def redeliver(self, message: Message) -> None:
        """``message`` arrives a second time."""
        for subscription in self._subscriptions:
            subscription._deliver(message)

    def resubscribed(self) -> None:
        """Every subscription reports that it replaced a lost connection."""
        for subscription in self._subscriptions:
            subscription._channels.add(RESUBSCRIBED)  # else the marker is filtered out
            subscription._queue.put_nowait(Message(RESUBSCRIBED, 0, b""))

    def lose_everything(self) -> None:
        """Redis restarted empty: numbering and history start again, every key is gone."""
        self._seq.clear()
        self._history.clear()
        self._kv.clear()

    def followed(self) -> set[str]:
        """The channels some subscription follows (what a worker asked Redis for)."""
        followed = {channel for sub in self._subscriptions for channel in sub.channels}
        return followed - {RESUBSCRIBED}
