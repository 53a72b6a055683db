"""What a :class:`~coinlink_client.stream.Stream` yields: typed frames and markers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coinlink_client.models import Candle, Notification, Ticker

# ``ticker:SYM`` → Ticker, ``tickers`` → list of Ticker, ``candles:SYM:1m`` → Candle,
# ``notifications`` → Notification.
Data = Ticker | list[Ticker] | Candle | Notification


@dataclass(frozen=True, slots=True)
class Update:
    """A channel's next message; ``seq`` is always the previous one's plus one."""

    channel: str
    seq: int
    data: Data


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A channel's whole current state, from which updates continue. ``data`` is None
    before the channel's first message, and always for ``notifications`` (read those
    from the REST API)."""

    channel: str
    seq: int
    data: Data | None


@dataclass(frozen=True, slots=True)
class Recovered:
    """After a reconnect: nothing of ``channel`` was lost; its updates continue after
    ``seq`` as if the connection had never dropped."""

    channel: str
    seq: int


@dataclass(frozen=True, slots=True)
class Resynced:
    """Updates of ``channel`` after ``seq`` were lost and the :class:`Snapshot` that follows
    replaces its state. ``reason``: ``reconnect`` (the server no longer had them), ``gap``
    (a seq was skipped) or ``reset`` (the server's numbering started again)."""

    channel: str
    seq: int
    reason: str


Event = Update | Snapshot | Recovered | Resynced


def channel_data(channel: str, raw: Any) -> Data | None:
    """A frame's ``data`` as the channel's type."""
    if raw is None:
        return None
    if channel == "tickers":
        return [Ticker.from_json(item) for item in raw]
    if channel.startswith("ticker:"):
        return Ticker.from_json(raw)
    if channel.startswith("candles:"):
        return Candle.from_json(raw)
    return Notification.from_json(raw)
