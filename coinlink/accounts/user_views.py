"""Each worker's rendered per-user reads, checked against the user's version in the bus.

``GET /users/me`` and the first pages of the alert and notification lists are read far
more often than they change. An authenticated request already makes one bus round trip,
the revocation check (an MGET of the token's and the session's marks); the same MGET also
reads the user's *version* (``user-version:<user id>``), a counter that every change of
what those reads show increments after its commit (:func:`user_changed`: a rename, an
alert created, changed, deleted or fired, a notification written or read). A worker
answers from its cache when the entry was filled under the version the request just read:
no database round trip and no rendering, and a change made through any worker (or by the
ingest leader) is seen by every worker's next request, as a revocation is.

Not cached: requests whose bus check failed (the database answers, as for revocations),
and list pages other than the first at the default limit
(:func:`coinlink.http.auth.cached_page_for_caller`): a key per cursor or limit would let
one user fill a worker with copies of the same rows.
Entries older than :data:`MAX_AGE_S` are read again, which bounds what a lost increment
(the bus failing between a commit and its increment, or losing its data) can leave stale.
Bounded by the bytes it holds (:data:`MAX_BYTES` per worker, least recently used first out).
The versions expire :data:`VERSION_TTL_S` after their first change (one bus key per user
would otherwise stay for ever). A version that expires and is created again restarts at 1,
so an entry filled under an earlier 1 could be served once more: for at most
:data:`MAX_AGE_S`, the same bound as a lost increment.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from typing import Final

import structlog

from coinlink import channels
from coinlink.bounded_cache import BoundedCache
from coinlink.bus import Bus, BusError

log = structlog.get_logger(logger_name="coinlink.accounts.user_views")

MAX_BYTES: Final = 16 * 1024 * 1024
"""Bodies kept per worker (~1,000 first pages of 50 notifications)."""
MAX_AGE_S: Final = 5.0
VERSION_TTL_S: Final = 24 * 3600.0
_ENTRY_OVERHEAD: Final = 256  # the key, the version, the tuple and the dict slot, roughly
_INCR_DEADLINE_S: Final = 1.0


async def user_changed(bus: Bus, user_id: str) -> None:
    """After a committed change of what a cached read of ``user_id`` shows: every worker's
    next such read goes to the database (best effort: entries expire in any case)."""
    try:
        async with asyncio.timeout(_INCR_DEADLINE_S):
            await bus.incr(
                channels.user_version_key(user_id),
                ttl_s=VERSION_TTL_S,
                group=channels.user_group(user_id),
            )
    except (BusError, TimeoutError) as exc:
        log.warning("user_change_not_marked_in_bus", error=str(exc) or "timeout")


def _size(body: bytes) -> int:
    return len(body) + _ENTRY_OVERHEAD


class UserViews(BoundedCache[tuple[str, Hashable], bytes]):
    """Rendered bodies by (user id, what), each valid under the user's version (the tag)
    and for :data:`MAX_AGE_S`. A body is put only when it was read from the database
    *after* its version was read from the bus (so a change committed in between leaves it
    stale, never wrongly fresh)."""

    def __init__(
        self,
        max_bytes: int = MAX_BYTES,
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(_size, max_bytes, max_age_s, clock)
