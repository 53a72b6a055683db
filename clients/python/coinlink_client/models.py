"""The API's objects as typed dataclasses: decimals as :class:`~decimal.Decimal`, record
times as aware datetimes, market times as epoch milliseconds (as the server sends them)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, Self, TypeVar, get_args, get_type_hints

T = TypeVar("T")
Json = dict[str, Any]


class _FromJson:
    """``from_json`` for a dataclass, by its fields' types: decimal strings become
    Decimal, ISO 8601 times datetime; fields with a default may be absent."""

    __slots__ = ()

    @classmethod
    def from_json(cls, raw: Json) -> Self:
        hints = _hints(cls)
        return cls(
            **{
                f.name: _typed(hints[f.name], raw[f.name])
                for f in fields(cls)  # type: ignore[arg-type]
                if f.name in raw or f.default is MISSING
            }
        )


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The class's field types, resolved once (a stream parses one object per frame)."""
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def _typed(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    kinds = get_args(hint) or (hint,)
    if Decimal in kinds:
        return Decimal(value)
    if datetime in kinds:
        # "2026-12-06T09:30:00.000Z": fromisoformat reads the Z from Python 3.11 on.
        return datetime.fromisoformat(value)
    return value


@dataclass(frozen=True, slots=True)
class Tokens:
    """A signed-in session's tokens. ``expires_at`` is the access token's expiry (epoch
    seconds); the refresh token is single use."""

    access_token: str
    refresh_token: str
    expires_at: float

    @classmethod
    def from_json(cls, raw: Json) -> Tokens:
        return cls(raw["access_token"], raw["refresh_token"], time.time() + raw["expires_in"])


@dataclass(frozen=True, slots=True)
class User(_FromJson):
    id: str
    email: str
    display_name: str
    is_admin: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Ticker(_FromJson):
    """One symbol's ticker. ``price`` and the statistics are None before its first tick;
    ``seq`` and ``stale`` come with REST only (a stream frame carries its own seq)."""

    symbol: str
    price: Decimal | None
    bid: Decimal | None
    ask: Decimal | None
    open_24h: Decimal | None
    high_24h: Decimal | None
    low_24h: Decimal | None
    volume_24h: Decimal | None
    quote_volume_24h: Decimal | None
    change_24h: Decimal | None
    change_pct_24h: Decimal | None
    ts: int | None
    seq: int | None = None
    stale: bool | None = None


@dataclass(frozen=True, slots=True)
class Candle(_FromJson):
    symbol: str
    interval: str
    open_time: int
    close_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int
    closed: bool


@dataclass(frozen=True, slots=True)
class Alert(_FromJson):
    id: str
    symbol: str
    condition: str
    threshold: Decimal
    window_s: int | None
    repeat: bool
    cooldown_s: int
    note: str
    status: str
    trigger_count: int
    last_triggered_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Notification(_FromJson):
    """``data`` depends on ``kind``; a ``price_alert``'s holds ``alert_id``, ``symbol``,
    ``condition``, ``threshold``, ``price`` and ``ts``."""

    id: str
    kind: str
    title: str
    body: str
    data: Json
    created_at: datetime
    read_at: datetime | None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list; pass ``next_cursor`` back for the next (None on the last)."""

    items: list[T] = field(default_factory=list)
    next_cursor: str | None = None

    @classmethod
    def from_json(cls, raw: Json, item: Callable[[Json], T]) -> Page[T]:
        return cls([item(entry) for entry in raw["items"]], raw["next_cursor"])
