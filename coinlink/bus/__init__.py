"""The bus (see :mod:`coinlink.bus.base`): Redis when a URL is configured, else in-process."""

from __future__ import annotations

from coinlink.bus.base import RESUBSCRIBED, Bus, BusError, LeaseTry, Message, Subscription
from coinlink.bus.memory import MemoryBus
from coinlink.bus.redis_bus import RedisBus

__all__ = [
    "RESUBSCRIBED",
    "Bus",
    "BusError",
    "LeaseTry",
    "MemoryBus",
    "Message",
    "RedisBus",
    "Subscription",
    "create_bus",
]


def create_bus(
    redis_url: str | None,
    *,
    prefix: str = "coinlink:",
    history_size: int = 100,
    timeout_s: float = 2.0,
) -> Bus:
    """A :class:`RedisBus` on ``redis_url``, or a :class:`MemoryBus` when there is none.

    Not started: the caller awaits :meth:`Bus.start` (in a worker's start-up listener).
    """
    if redis_url:
        return RedisBus(redis_url, prefix=prefix, history_size=history_size, timeout_s=timeout_s)
    return MemoryBus(history_size=history_size)
