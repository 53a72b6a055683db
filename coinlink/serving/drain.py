"""A worker's way out after SIGTERM: drain, then stop, within one budget.

1. At once: readiness answers 503, every response closes its connection, a new WebSocket
   is refused with 503 ``draining``, and the singleton jobs (ingest, webhook delivery) stop
   and release their leases, so another instance takes them over without waiting.
2. For ``COINLINK_SHUTDOWN_DRAIN_S`` the worker keeps serving: load balancers and
   Kubernetes endpoints stop routing to it meanwhile, and a proxy's idle connections to it
   expire.
3. New connection attempts are dropped at the listening socket (:mod:`.listener`) and what
   is already queued is accepted; then Sanic stops the server: sockets close with 1001 and
   a reconnect hint, every request already on its way finishes (:mod:`.protocol`), and the
   background tasks stop, concurrently, by their own stop signals.

Everything ends by ``COINLINK_SHUTDOWN_BUDGET_S`` after the signal; a worker still alive
then is ended by a watchdog (an error: its exit is not clean).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from sanic import Sanic

from coinlink.serving.listener import listening_socket, refuse_new_connections
from config.settings import ShutdownSettings

log = structlog.get_logger(logger_name="coinlink.serving.drain")

StopJobs = Callable[[], Coroutine[Any, Any, None]]

# Time after the last new connection attempt for handshakes already under way to complete.
HANDSHAKE_GRACE_S = 0.05
# Kept free at the end of the budget for the process to exit and its manager to notice.
EXIT_MARGIN_S = 0.5
# What stopping work leaves of the budget for requests on their way (within the 2 s a budget
# must exceed the drain by: COINLINK_SHUTDOWN_BUDGET_S).
FINISH_RESERVE_S = 1.5
EXIT_OVERRAN = 70  # a worker that did not stop within its budget


class Drain:
    """One worker's drain: ``draining`` is read on every response and WebSocket upgrade."""

    def __init__(self, settings: ShutdownSettings) -> None:
        self.settings = settings
        self.draining = False
        self._deadline = 0.0
        self._watchdog: threading.Timer | None = None
        self._running: asyncio.Task[None] | None = None  # held: the loop keeps tasks weakly

    def install(self, app: Sanic[Any, Any], stop_jobs: StopJobs) -> None:
        """Make SIGTERM start the drain in this worker (Sanic's handler would stop at once)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.begin, app, stop_jobs)

    def begin(self, app: Sanic[Any, Any], stop_jobs: StopJobs) -> None:
        if self.draining:
            return
        self.draining = True
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self.settings.budget_s - EXIT_MARGIN_S
        self._watchdog = threading.Timer(self.settings.budget_s, _overran, (self.settings,))
        self._watchdog.daemon = True
        self._watchdog.start()
        log.info("draining", drain_s=self.settings.drain_s, budget_s=self.settings.budget_s)
        self._running = loop.create_task(self._run(app, stop_jobs), name="drain")

    def remaining_s(self) -> float:
        """Seconds left of the budget (the whole budget before any signal)."""
        if not self.draining:
            return self.settings.budget_s
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    def finished(self) -> None:
        """The worker is about to exit: the watchdog has nothing left to guard."""
        if self._watchdog is not None:
            self._watchdog.cancel()

    async def finish(self, app: Sanic[Any, Any], *work: Coroutine[Any, Any, None]) -> None:
        """For ``before_server_stop``: run ``work`` concurrently within the budget less what
        requests on their way are owed; cancel what overruns. Sanic's wait for those
        requests then gets the rest of the budget."""
        tasks = [asyncio.create_task(item, name=getattr(item, "__qualname__", "")) for item in work]
        done, late = await asyncio.wait(tasks, timeout=self._for_work())
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("stop_failed", task=task.get_name(), exc_info=task.exception())
        for task in late:
            log.warning("stop_overran", task=task.get_name())
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=EXIT_MARGIN_S)
        app.config.GRACEFUL_SHUTDOWN_TIMEOUT = self.remaining_s()

    def _for_work(self) -> float:
        return max(0.0, self.remaining_s() - FINISH_RESERVE_S)

    async def _run(self, app: Sanic[Any, Any], stop_jobs: StopJobs) -> None:
        # The jobs' hand-over runs alongside the drain: it need not wait for routing to end.
        jobs = asyncio.create_task(stop_jobs(), name="drain-jobs")
        await asyncio.sleep(self.settings.drain_s)  # serving goes on meanwhile: the drain
        # Still accepting while they finish: a connection attempt now is served, not left
        # waiting on a socket that drops it.
        await asyncio.wait([jobs], timeout=self._for_work())
        sock = listening_socket(app)
        if sock is None:
            log.warning("listener_not_found")  # it closes later, with what it has queued
        elif refuse_new_connections(sock):
            await asyncio.sleep(HANDSHAKE_GRACE_S)
        log.info("drained", remaining_s=round(self.remaining_s(), 2))
        app.stop(terminate=False)


def _overran(settings: ShutdownSettings) -> None:
    log.error("shutdown_overran", budget_s=settings.budget_s, pid=os.getpid())
    os._exit(EXIT_OVERRAN)
