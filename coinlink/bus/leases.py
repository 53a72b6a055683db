"""Taking turns at a bus lease for a singleton job (ingest, webhook delivery), safely."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from coinlink import channels
from coinlink.backoff import Backoff
from coinlink.beat import sleep_to_beat
from coinlink.bus import Bus, BusError

log = structlog.get_logger(logger_name="coinlink.bus.leases")

STOP_GRACE_S = 5.0  # a reign asked to stop ends within this, or is left to cancellation
_EXPIRY_SLACK_S = 0.01


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less once ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


async def take_turns(
    bus: Bus,
    name: str,
    holder: str,
    ttl_s: float,
    reign: Callable[[int, float], Awaitable[None]],
    stop: asyncio.Event,
    wake: asyncio.Event,
) -> None:
    """Until ``stop`` is set: wait for lease ``name``, run ``reign(token, expires_at)`` while
    holding it, release it, repeat. ``reign`` should end (see :func:`keep_lease`) once holding
    the lease can no longer be proven, and promptly once ``stop`` is set; it logs its own
    failures. Cancellation ends this too (and still releases the lease), as a last resort.

    A holder announces each release on :data:`~coinlink.channels.LEASES_RELEASED`; whoever
    hears of it sets ``wake``, and the next try comes at once (``wake`` must be set when
    ``stop`` is too, as :class:`Turns` does: a pause waits for ``wake`` alone). A refused try
    says how long the holder's grant still runs, and the next comes when it runs out: a
    live holder has renewed it by then (the answer gives the new end), a dead one is
    replaced at once, and an announcement lost with a connection costs no more. Polling
    every quarter of the lease made those tries most of an idle server's Redis calls.
    After a failure, back off from a quarter of the lease to a whole one: no churn while a
    dependency is down, and the first try after it is back still comes within one lease
    period. A reign that lasted a whole lease starts the pauses short again.
    """
    retry = Backoff(ttl_s / 4, ttl_s)
    while not stop.is_set():
        wake.clear()  # before the try: an announcement from here on is not missed
        sent = time.monotonic()  # the lease runs out ttl_s after this, by our clock
        try:
            attempt = await bus.acquire_lease(name, holder, ttl_s)
        except BusError as exc:
            log.warning("lease_unavailable", lease=name, error=str(exc))
            await pause(wake, retry.next())
            continue
        token = attempt.token
        if token is None:  # another holds it: not a failure of ours
            retry.reset()
            # The floor: Redis expires the key by its own clock, a moment after it says 0.
            await pause(wake, min(ttl_s, max(attempt.held_s, _EXPIRY_SLACK_S)))
            continue
        try:
            if not stop.is_set():  # stopped while the lease was being taken: give it back
                await reign(token, sent + ttl_s)
        finally:
            with contextlib.suppress(BusError):
                await bus.release_lease(name, holder, token)
                await bus.publish(channels.LEASES_RELEASED, name.encode())
        if time.monotonic() - sent >= ttl_s:
            retry.reset()
        await pause(stop, retry.next())


class Turns:
    """One worker's turns at a singleton job's lease: :meth:`run` takes them (see
    :func:`take_turns`) until :meth:`stop`, after which it never takes the lease again."""

    def __init__(
        self,
        bus: Bus,
        name: str,
        holder: str,
        ttl_s: float,
        reign: Callable[[int, float], Awaitable[None]],
    ) -> None:
        self.bus = bus
        self.name = name
        self.holder = holder
        self.ttl_s = ttl_s
        self.reign = reign
        self.stopping = asyncio.Event()  # reigns watch it to end gracefully
        self._wake = asyncio.Event()  # the lease was released, or stopping
        self._idle = asyncio.Event()
        self._idle.set()

    async def run(self) -> None:
        self._idle.clear()
        try:
            await take_turns(
                self.bus,
                self.name,
                self.holder,
                self.ttl_s,
                self.reign,
                self.stopping,
                self._wake,
            )
        finally:
            self._idle.set()

    def released(self, name: bytes) -> None:
        """A holder released lease ``name`` (a message of ``LEASES_RELEASED``): try now."""
        if name.decode(errors="replace") == self.name:
            self._wake.set()

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Ask the reign to end and wait until it has and the lease is released.

        A reign stuck longer than ``grace_s`` (a database that does not answer) is left
        running: the caller cancels :meth:`run`'s task, the last resort.
        """
        self.stopping.set()
        self._wake.set()
        try:
            async with asyncio.timeout(grace_s):
                await self._idle.wait()
        except TimeoutError:
            log.warning("lease_reign_not_stopped", lease=self.name, grace_s=grace_s)


async def while_held(lease: asyncio.Task[None], work: Awaitable[None]) -> None:
    """Run ``work`` to its end, unless the lease ends first (``lease`` is the task of
    :func:`keep_lease`): then cancel it, since another holder may be starting. Raises what
    ``work`` raised."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait([task, lease], return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()  # nothing when it is done
        await asyncio.gather(task, return_exceptions=True)
    failure = None if task.cancelled() else task.exception()
    if failure is not None:
        raise failure


async def keep_lease(
    bus: Bus, name: str, holder: str, token: int, ttl_s: float, expires_at: float
) -> None:
    """Renew every quarter of the lease (on its beats, :mod:`coinlink.beat`: never later
    than a quarter and a millisecond after the last renewal); return (ending the reign) as
    soon as holding it can no longer be proven.

    ``expires_at`` is when the lease runs out by our clock, counted from before the call
    that took or renewed it; a renewal that has not answered by then is given up, so the
    holder stops before another can have taken over. Renewing every quarter leaves a
    renewal that long (minus the margin) to answer, 1.3 s of the default 2 s lease.
    """
    margin = min(0.5, ttl_s / 10)
    while True:
        await sleep_to_beat(ttl_s / 4)
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
