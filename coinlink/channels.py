"""Every bus channel and shared bus key, named once.

Market data, published by the ingest leader and followed by every worker's hub (clients
subscribe to the same names on ``/ws``):

* ``ticker:<SYMBOL>`` — one symbol's ticker; ``tickers`` — all of them in one batch;
* ``candles:<SYMBOL>:<INTERVAL>`` — the current and each closed candle.

Per user: ``notifications:<user id>``, the private channel a client subscribes to as
``notifications``. Control channels between workers and instances: ``revocations``
(sessions ended: close their sockets), ``alerts:changes`` (``{"id": ...}`` of an alert
created, changed or deleted), ``webhooks:due`` (a delivery was queued),
``ingest:admin-ticks`` (ticks injected by an admin, for the leader). Key:
``ingest:heartbeat``, the leader's liveness for ``/readyz``.
"""

from __future__ import annotations

from typing import Final

TICKERS: Final = "tickers"
NOTIFICATIONS: Final = "notifications"
"""The name a client subscribes to; on the bus it is ``notifications:<user id>``."""
PRIVATE_PREFIX: Final = f"{NOTIFICATIONS}:"

REVOCATIONS: Final = "revocations"
ALERT_CHANGES: Final = "alerts:changes"
WEBHOOKS_DUE: Final = "webhooks:due"
ADMIN_TICKS: Final = "ingest:admin-ticks"

INGEST_HEARTBEAT_KEY: Final = "ingest:heartbeat"


def ticker(symbol: str) -> str:
    return f"ticker:{symbol}"


def candles(symbol: str, interval: str) -> str:
    return f"candles:{symbol}:{interval}"


def notifications(user_id: str) -> str:
    """The bus channel of one user's notifications."""
    return f"{PRIVATE_PREFIX}{user_id}"
