"""The REST client for code without an event loop: :class:`AsyncClient` run on a loop of
its own in a background thread, so both share one behaviour (and one token refresh)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from decimal import Decimal
from typing import Any, TypeVar

from coinlink_client.models import Alert, Candle, Notification, Page, Ticker, Tokens, User
from coinlink_client.rest import AsyncClient

T = TypeVar("T")


class Client:
    """The same calls and options as :class:`AsyncClient`, blocking; safe to share
    between threads. Close it (or use ``with``) to stop its thread."""

    def __init__(self, base_url: str, **options: Any) -> None:
        self._aio = AsyncClient(base_url, **options)  # first: bad options start no thread
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="coinlink-client", daemon=True
        )
        self._thread.start()

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._aio.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    @property
    def tokens(self) -> Tokens | None:
        return self._aio.tokens

    def refresh(self) -> Tokens:
        return self._run(self._aio.refresh())

    def register(self, email: str, password: str, display_name: str = "") -> User:
        return self._run(self._aio.register(email, password, display_name))

    def login(self, email: str, password: str) -> User:
        return self._run(self._aio.login(email, password))

    def logout(self) -> None:
        self._run(self._aio.logout())

    def me(self) -> User:
        return self._run(self._aio.me())

    def tickers(self, symbols: list[str] | None = None) -> list[Ticker]:
        return self._run(self._aio.tickers(symbols))

    def ticker(self, symbol: str) -> Ticker:
        return self._run(self._aio.ticker(symbol))

    def candles(self, symbol: str, interval: str = "1m", **range_: int | None) -> list[Candle]:
        """``start``, ``end``, ``limit`` as in :meth:`AsyncClient.candles`."""
        return self._run(self._aio.candles(symbol, interval, **range_))

    def create_alert(
        self, symbol: str, condition: str, threshold: Decimal | str, **options: Any
    ) -> Alert:
        return self._run(self._aio.create_alert(symbol, condition, threshold, **options))

    def alerts(self, **query: Any) -> Page[Alert]:
        return self._run(self._aio.alerts(**query))

    def alert(self, alert_id: str) -> Alert:
        return self._run(self._aio.alert(alert_id))

    def update_alert(self, alert_id: str, **changes: Any) -> Alert:
        return self._run(self._aio.update_alert(alert_id, **changes))

    def delete_alert(self, alert_id: str) -> None:
        self._run(self._aio.delete_alert(alert_id))

    def notifications(self, **query: Any) -> Page[Notification]:
        return self._run(self._aio.notifications(**query))

    def unread_count(self) -> int:
        return self._run(self._aio.unread_count())

    def mark_read(self, notification_id: str) -> Notification:
        return self._run(self._aio.mark_read(notification_id))

    def mark_all_read(self) -> int:
        return self._run(self._aio.mark_all_read())
