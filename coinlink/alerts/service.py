"""Price alerts as their owner manages them: the rules, and each change announced once made.

A user sees only their own alerts: another user's alert is as unknown as a missing one
(:class:`AlertNotFound`). Creation is capped per user (:class:`AlertLimitReached`). Every
create, change and delete is announced on ``alerts:changes`` so the ingest leader's engine
re-reads it (:func:`coinlink.alerts.store.announce`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

from coinlink.accounts.user_views import user_changed
from coinlink.alerts import store
from coinlink.alerts.engine import PCT_WINDOWS
from coinlink.bus import Bus
from coinlink.invalid import Invalid
from coinlink.market.service import UnknownSymbol
from models.alerts import Alert

MAX_PRICE = Decimal(10) ** 17
MAX_PCT = Decimal(1000)
MAX_COOLDOWN_S = 7 * 86_400


class AlertNotFound(Exception):
    def __init__(self) -> None:
        super().__init__("no such alert")


def check_window(condition: str, window_s: int | None, threshold: Decimal | None) -> None:
    """``ValueError`` unless ``window_s`` and ``threshold`` fit an alert of ``condition``."""
    if condition == "pct_change":
        if window_s not in PCT_WINDOWS:
            raise ValueError(f"window_s must be one of {', '.join(map(str, PCT_WINDOWS))}")
        if threshold is not None and threshold > MAX_PCT:
            raise ValueError(f"a pct_change threshold is a percentage up to {MAX_PCT}")
    elif window_s is not None:
        raise ValueError("window_s applies to pct_change alerts only")


class AlertService:
    def __init__(self, bus: Bus, symbols: list[str], max_per_user: int) -> None:
        self.bus = bus
        self.symbols = frozenset(symbols)
        self.max_per_user = max_per_user

    async def create(self, user_id: str, values: dict[str, Any]) -> Alert:
        """A new active alert (``values`` checked by the request model)."""
        if values["symbol"] not in self.symbols:
            raise UnknownSymbol(values["symbol"])
        alert = await store.create(user_id, self.max_per_user, **values)
        await store.announce(self.bus, alert.id)
        await user_changed(self.bus, user_id)
        return alert

    async def get(self, user_id: str, raw_id: str) -> Alert:
        try:
            alert_id = UUID(raw_id)
        except ValueError:
            raise AlertNotFound from None
        alert = await store.of_user(user_id, alert_id)
        if alert is None:
            raise AlertNotFound
        return alert

    async def listed(
        self, user_id: str, status: str | None, limit: int, before_seq: int | None
    ) -> list[Alert]:
        return await store.listed(user_id, status, limit, before_seq)

    async def change(self, user_id: str, raw_id: str, changes: dict[str, Any]) -> Alert:
        alert = await self.get(user_id, raw_id)
        nulls = [name for name, value in changes.items() if value is None]
        if nulls:
            raise Invalid(dict.fromkeys(nulls, "must not be null"))
        try:
            check_window(alert.condition, alert.window_s, changes.get("threshold"))
        except ValueError as exc:
            raise Invalid({"threshold": str(exc)}) from None
        if changes:
            alert = await store.update(alert, changes)
            await store.announce(self.bus, alert.id)
            await user_changed(self.bus, user_id)
        return alert

    async def delete(self, user_id: str, raw_id: str) -> None:
        alert = await self.get(user_id, raw_id)
        await store.delete(alert)
        await store.announce(self.bus, alert.id)
        await user_changed(self.bus, user_id)
