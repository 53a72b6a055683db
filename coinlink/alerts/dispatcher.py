"""Webhook delivery: one dispatcher across every instance drains the outbox's webhook rows.

Every worker competes for the ``webhooks`` lease; the holder polls the outbox for due
``webhook`` rows and POSTs each notification (see :mod:`coinlink.alerts.webhooks` for the URL
checks, signing and what an answer means), a few at a time. Each attempt is logged for the
user (``GET /api/v2/notifications/deliveries``). Success marks the row done; a retryable
failure schedules the next attempt with :func:`coinlink.backoff.delay` and the webhook
constants; a permanent failure, or too many attempts, or too old a row, marks it failed. The
row's id is the delivery id the receiver sees on every attempt. A dispatcher that loses its
lease mid-delivery may race its successor on one row: the receiver then sees the same
delivery id twice, which is what the id is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import structlog
from prometheus_client import Counter, Gauge
from tortoise.functions import Count, Min

from coinlink import backoff
from coinlink.alerts import webhooks
from coinlink.alerts.notifications import notification_dict
from coinlink.bus import Bus
from coinlink.bus.leases import Turns, keep_lease, while_held
from models.alerts import OutboxItem, WebhookAttempt

log = structlog.get_logger(logger_name="coinlink.alerts.webhooks")

LEASE = "webhooks"
# Longer than the ingest lease: its renewals (every quarter) and the other workers' tries
# were half of an idle server's Redis calls, and a crashed holder's deliveries waiting this
# long for a successor is no loss (a stopping holder hands over at once).
LEASE_S = 10.0
BATCH = 50
CONCURRENCY = 10

ATTEMPTS = Counter("webhook_attempts_total", "Webhook POSTs, by outcome.", ["outcome"])
# Counted by the lease holder after each drain; any other worker says 0 (a former holder's
# count would go stale), so "livemax" is an instance's leader's count and max() over the
# instances is the outbox's, without counting it twice during a hand-over.
BACKLOG = Gauge(
    "webhook_backlog",
    "Webhook deliveries outstanding (due or waiting for a retry), counted by the dispatcher.",
    multiprocess_mode="livemax",
)


class AttemptsFailed(Exception):
    """Some attempts of a drain raised (each is logged): their rows are still due."""


class Dispatcher:
    def __init__(
        self,
        bus: Bus,
        *,
        allow_private: bool,
        timeout_s: float,
        retry_base_s: float = webhooks.BASE_DELAY_S,
        lease_ttl_s: float = LEASE_S,
        poll_s: float = 5.0,
    ) -> None:
        self.bus = bus
        self.allow_private = allow_private
        self.timeout_s = timeout_s
        self.retry_base_s = retry_base_s
        self.lease_ttl_s = lease_ttl_s
        self.poll_s = poll_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.due = asyncio.Event()
        self.turns = Turns(bus, LEASE, self.holder, lease_ttl_s, self._reign)

    def wake(self, _data: bytes = b"") -> None:
        """A hub callback for :data:`DUE`."""
        self.due.set()

    async def run(self) -> None:
        """Until :meth:`stop`: take turns at the lease with the other workers; deliver while
        holding it."""
        await self.turns.run()

    async def stop(self) -> None:
        """Hand over: no new attempt starts, those under way end (within the webhook
        timeout), then the lease is released (see :meth:`Turns.stop` for a stuck reign)."""
        self.due.set()  # out of its wait for work
        await self.turns.stop()

    async def _reign(self, token: int, expires_at: float) -> None:
        try:
            await self._deliver(token, expires_at)
        except Exception:
            log.exception("webhook_reign_failed")
        finally:
            BACKLOG.set(0)  # the successor counts from now on

    async def _deliver(self, token: int, expires_at: float) -> None:
        async with webhooks.new_client() as client:
            lease = asyncio.create_task(
                keep_lease(self.bus, LEASE, self.holder, token, self.lease_ttl_s, expires_at)
            )
            try:
                await while_held(lease, self._drain_forever(client))
            finally:
                lease.cancel()
                await asyncio.gather(lease, return_exceptions=True)

    async def _drain_forever(self, client: httpx.AsyncClient) -> None:
        """Until the worker stops. Idle, one query a poll: what is outstanding and when
        the nearest is due; the drain's own query only once something is due."""
        while not self.turns.stopping.is_set():
            self.due.clear()
            try:
                backlog, wait_s = await self.outstanding()
                BACKLOG.set(backlog)
                if wait_s <= 0 and await self.drain(client):
                    continue  # at once: the next batch, or when what is left is due
            except AttemptsFailed as exc:
                log.warning("webhook_drain_failed", error=str(exc))
                wait_s = self.poll_s
            except Exception:
                log.warning("webhook_drain_failed", exc_info=True)
                wait_s = self.poll_s
            # Until the next retry is due, a new row is announced, or the poll (which
            # catches an announcement lost while Redis was away).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait_s, 0.0) or self.poll_s):
                    await self.due.wait()

    async def outstanding(self) -> tuple[int, float]:
        """How many webhook deliveries are still outstanding (due now or waiting for a
        retry), and the seconds until the nearest is due (0 when one is; at most the poll)."""
        row = (
            await OutboxItem.filter(kind="webhook", done_at__isnull=True, failed_at__isnull=True)
            .annotate(count=Count("id"), nearest=Min("due_at"))
            .values("count", "nearest")
        )[0]
        nearest: datetime | None = row["nearest"]
        if nearest is None:
            return row["count"], self.poll_s
        ahead = (nearest - datetime.now(UTC)).total_seconds()
        return row["count"], min(self.poll_s, max(0.0, ahead))

    async def drain(self, client: httpx.AsyncClient) -> int:
        """Attempt every due webhook row (up to a batch); how many were attempted.
        :class:`AttemptsFailed` once all have ended when some raised."""
        due = (
            await OutboxItem.filter(
                kind="webhook",
                done_at__isnull=True,
                failed_at__isnull=True,
                due_at__lte=datetime.now(UTC),
            )
            .order_by("due_at")
            .limit(BATCH)
            .prefetch_related("notification", "user")
        )
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(item: OutboxItem) -> None:
            async with gate:
                if not self.turns.stopping.is_set():  # stopping: left to the successor
                    try:
                        await self.attempt(client, item)
                    except Exception as exc:
                        log.warning("webhook_attempt_failed", error=str(exc))
                        await self._defer(item)

        # Every attempt runs to its end: one failing must not leave others running into
        # the next drain (which would POST their rows a second time).
        outcomes = await asyncio.gather(*(one(item) for item in due), return_exceptions=True)
        failed = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
        if failed:
            # Rows still due, their outcome not recorded nor their next try put off (the
            # database refuses writes): raised, so that the loop pauses for a poll instead
            # of POSTing them again at once.
            raise AttemptsFailed(f"{len(failed)} of {len(due)} webhook attempts failed")
        return len(due)

    async def _defer(self, item: OutboxItem) -> None:
        """An attempt whose outcome could not be recorded is tried again after a poll, not
        first in every batch (where a row that always fails would hold the others up)."""
        later = datetime.now(UTC) + timedelta(seconds=self.poll_s)
        await OutboxItem.filter(id=item.id).update(due_at=later)

    async def attempt(self, client: httpx.AsyncClient, item: OutboxItem) -> None:
        user, notification = item.user, item.notification
        number = item.attempts + 1
        now = datetime.now(UTC)
        url = user.webhook_url or ""
        if not url or not user.webhook_secret:
            # Nothing to deliver to (the URL was removed) or nothing to sign with.
            reason = "no webhook URL" if not url else "no webhook secret: create one first"
            result = webhooks.DeliveryResult(False, None, reason, 0, False)
        else:
            body = orjson.dumps(notification_dict(notification))
            stamp = int(time.time())
            headers = webhooks.headers(
                str(item.id), stamp, webhooks.sign(user.webhook_secret, stamp, body)
            )
            result = await webhooks.deliver(
                client,
                url,
                body,
                headers,
                allow_private=self.allow_private,
                timeout_s=self.timeout_s,
            )
        error = (result.error or "")[:200]
        await WebhookAttempt.create(
            user_id=user.id,
            delivery_id=item.id,
            notification_id=notification.id,
            attempt=number,
            url=url[:2048],
            status_code=result.status,
            ok=result.ok,
            error=error,
            duration_ms=result.duration_ms,
            created_at=now,
        )
        item.attempts = number
        item.last_error = error
        age_s = (now - item.created_at).total_seconds()
        if result.ok:
            item.done_at = now
            outcome = "delivered"
        elif not result.retryable or webhooks.gives_up(number, age_s):
            item.failed_at = now
            outcome = "failed"
            log.info("webhook_given_up", delivery_id=str(item.id), attempts=number, error=error)
        else:
            delay = backoff.delay(number, base_s=self.retry_base_s, cap_s=webhooks.MAX_DELAY_S)
            item.due_at = now + timedelta(seconds=delay)
            outcome = "retry"
        ATTEMPTS.labels(outcome).inc()
        await item.save(update_fields=["attempts", "last_error", "done_at", "failed_at", "due_at"])
