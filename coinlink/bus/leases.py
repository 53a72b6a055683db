"""Holding a bus lease for a singleton job (ingest, webhook delivery) safely."""

from __future__ import annotations

import asyncio
import time

import structlog

from coinlink.bus import Bus, BusError

log = structlog.get_logger(logger_name="coinlink.bus.leases")


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
