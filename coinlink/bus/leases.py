"""Taking turns at a bus lease for a singleton job (ingest, webhook delivery), safely."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn

import structlog

from coinlink.backoff import Backoff
from coinlink.bus import Bus, BusError

log = structlog.get_logger(logger_name="coinlink.bus.leases")


async def take_turns(
    bus: Bus, name: str, holder: str, ttl_s: float, reign: Callable[[int, float], Awaitable[None]]
) -> NoReturn:
    """Forever: wait for lease ``name``, run ``reign(token, expires_at)`` while holding it,
    release it, repeat. ``reign`` should end (see :func:`keep_lease`) once holding the lease
    can no longer be proven; it logs its own failures.

    While another holds the lease, poll every ttl/5: a dead holder is replaced within its
    lease plus that. After a failure, back off from ttl/5 to a whole lease: no churn while
    a dependency is down, and the first try after it is back still comes within one lease
    period. A reign that lasted a whole lease starts the pauses short again.
    """
    poll_s = ttl_s / 5
    retry = Backoff(poll_s, ttl_s)
    while True:
        sent = time.monotonic()  # the lease runs out ttl_s after this, by our clock
        try:
            token = await bus.acquire_lease(name, holder, ttl_s)
        except BusError as exc:
            log.warning("lease_unavailable", lease=name, error=str(exc))
            await asyncio.sleep(retry.next())
            continue
        if token is None:  # another holds it: not a failure of ours
            retry.reset()
            await asyncio.sleep(poll_s)
            continue
        try:
            await reign(token, sent + ttl_s)
        finally:
            with contextlib.suppress(BusError):
                await bus.release_lease(name, holder, token)
        if time.monotonic() - sent >= ttl_s:
            retry.reset()
        await asyncio.sleep(retry.next())


async def keep_lease(
    bus: Bus, name: str, holder: str, token: int, ttl_s: float, expires_at: float
) -> None:
    """Renew every third of the lease; return (ending the reign) as soon as holding it
    can no longer be proven.

    ``expires_at`` is when the lease runs out by our clock, counted from before the call
    that took or renewed it; a renewal that has not answered by then is given up, so the
    holder stops before another can have taken over.
    """
    margin = min(0.5, ttl_s / 10)
    while True:
        await asyncio.sleep(ttl_s / 3)
        sent = time.monotonic()
        try:
            async with asyncio.timeout(max(0.0, expires_at - margin - sent)):
                renewed = await bus.renew_lease(name, holder, token, ttl_s)
        except (BusError, TimeoutError) as exc:
            log.warning(
                "lease_unverifiable",
                lease=name,
                fencing_token=token,
                error=str(exc) or "renewal too slow",
            )
            return
        if not renewed:
            log.warning("lease_lost", lease=name, holder=holder, fencing_token=token)
            return
        expires_at = sent + ttl_s
