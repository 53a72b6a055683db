"""Every bus channel and shared bus key, named once.

Market data, published by the ingest leader and followed by every worker's hub (clients
subscribe to the same names on ``/ws``):

* ``ticker:<SYMBOL>`` — one symbol's ticker; ``tickers`` — all of them in one batch;
* ``candles:<SYMBOL>:<INTERVAL>`` — the current and each closed candle.

Per user: ``notifications:<user id>``, the private channel a client subscribes to as
``notifications``. Control channels between workers and instances: ``revocations``
(sessions ended: close their sockets), ``alerts:changes`` (``{"id": ...}`` of an alert
created, changed or deleted), ``webhooks:due`` (a delivery was queued),
``ingest:admin-ticks`` (ticks injected by an admin, for the leader), ``leases:released``
(the name of a singleton job's lease just given up, for the next holder). Keys:
``ingest:heartbeat``, the leader's liveness for ``/readyz``. Per user, in the user's key
group (:func:`user_group`; on a Redis Cluster one hash slot, so every request's revocation
check is one MGET on one shard): ``denied-jti:<jti>``, an access token logged out;
``revoked-session:<session id>``, a session ended; ``user-version:<user id>``, a counter of
changes to what the cached per-user reads show (coinlink.accounts.user_views).
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
LEASES_RELEASED: Final = "leases:released"

INGEST_HEARTBEAT_KEY: Final = "ingest:heartbeat"


def ticker(symbol: str) -> str:
    return f"ticker:{symbol}"


def candles(symbol: str, interval: str) -> str:
    return f"candles:{symbol}:{interval}"


def notifications(user_id: str) -> str:
    """The bus channel of one user's notifications."""
    return f"{PRIVATE_PREFIX}{user_id}"


def user_group(user_id: str) -> str:
    """The bus key group of one user's keys (those below)."""
    return f"u:{user_id}"


def denied_jti_key(jti: str) -> str:
    return f"denied-jti:{jti}"


def revoked_session_key(session_id: str) -> str:
    return f"revoked-session:{session_id}"


def user_version_key(user_id: str) -> str:
    """The bus key of one user's version (coinlink.accounts.user_views)."""
    return f"user-version:{user_id}"
