"""Alert evaluation, run by the ingest leader: exactly one evaluator across every instance.

At the start of a reign the evaluator loads every active alert from the database into a
fresh :class:`~coinlink.alerts.engine.AlertEngine`; alert changes made through the API
arrive as bus events (``alerts:changes``) and are re-read from the database. Every tick the
pipeline accepts goes through the engine (synchronously, microseconds); what fires is
queued for the writer task, so a slow database never holds up ticks.

Firing is durable first. For each firing, ONE transaction re-reads the alert under a row
lock (a deleted or disabled one is skipped), counts the firing (a one-shot alert becomes
``triggered``), and writes the notification with its outbox rows: ``publish`` always,
``webhook`` when the user has a webhook URL. Only after the commit is the notification
published on the user's ``notifications:<user id>`` bus channel, and the ``publish`` row
marked done. A crash between the two leaves the row pending: the next leader publishes it
when it takes over, and a sweep every few seconds retries what a Redis outage held back.
Delivery is therefore at least once; the notification id lets clients drop a repeat.
A restart never fires a ``triggered`` alert again: it is not loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import structlog
from prometheus_client import Counter, Gauge
from tortoise.transactions import in_transaction

from coinlink import channels
from coinlink.accounts.user_views import user_changed
from coinlink.alerts.engine import AlertEngine, AlertSpec, Firing
from coinlink.alerts.notifications import notification_dict
from coinlink.backoff import Backoff
from coinlink.bus import Bus, BusError
from coinlink.bus.leases import pause
from coinlink.market.types import Tick
from coinlink.wire import decimal_str
from models.accounts import User
from models.alerts import Alert, Notification, OutboxItem

log = structlog.get_logger(logger_name="coinlink.alerts")

FIRED = Counter("alerts_fired_total", "Alert firings committed (notification written).")
PUBLISHED = Counter("alerts_notifications_published_total", "Notifications published to sockets.")
LOADED = Gauge(
    "alerts_loaded",
    "Active alerts in the ingest leader's engine (changes land within moments).",
    multiprocess_mode="livesum",
)

SWEEP_S = 5.0
# While the database is away (coinlink.backoff): 0.5 s doubling to 10 s.
_RETRY_BASE_S = 0.5
_RETRY_CAP_S = 10.0
LOAD_PAGE = 10_000
_SPEC_FIELDS = (
    "id",
    "seq",
    "symbol",
    "condition",
    "threshold",
    "window_s",
    "repeat",
    "cooldown_s",
    "last_fired_ts",
    "crossed_back",
)
PUBLISH_HORIZON = timedelta(days=1)  # older undelivered socket pushes are not worth sending


def spec_of(alert: Alert) -> AlertSpec:
    return _spec({name: getattr(alert, name) for name in _SPEC_FIELDS})


def _spec(row: dict[str, Any]) -> AlertSpec:
    """The engine's view of an alert row (a model's fields or a ``values()`` row)."""
    return AlertSpec(**{**row, "id": str(row["id"])})


def _arm(engine: AlertEngine, spec: AlertSpec) -> None:
    try:
        engine.add(spec)
    except ValueError as exc:  # a row the API would never have written: skip, not crash
        log.error("alert_not_evaluable", alert_id=spec.id, error=str(exc))


async def load_active(engine: AlertEngine) -> None:
    """Every active alert, in pages of plain rows (no model objects: a million load fast)."""
    after = 0
    while True:
        rows = (
            await Alert.filter(status="active", seq__gt=after)
            .order_by("seq")
            .limit(LOAD_PAGE)
            .values(*_SPEC_FIELDS)
        )
        for row in rows:
            _arm(engine, _spec(row))
        if len(rows) < LOAD_PAGE:
            return
        after = rows[-1]["seq"]
        await asyncio.sleep(0)  # a large load must not starve the lease renewals


def _describe(firing: Firing) -> tuple[str, str]:
    threshold = decimal_str(firing.threshold)
    price = decimal_str(firing.price)
    if firing.condition == "pct_change":
        move = (
            decimal_str(firing.move_pct.quantize(Decimal("0.01")))
            if firing.move_pct is not None
            else "?"
        )
        return (
            f"{firing.symbol} moved {move} %",
            f"{firing.symbol} moved {move} % (your alert: {threshold} %); it is at {price}.",
        )
    return (
        f"{firing.symbol} {firing.condition} {threshold}",
        f"{firing.symbol} traded at {price}, {firing.condition} your alert at {threshold}.",
    )


class Evaluator:
    def __init__(self, bus: Bus, *, pause_after_commit_s: float = 0.0) -> None:
        self.bus = bus
        self.engine: AlertEngine | None = None
        # A test hook: a gap between commit and publish that a test can kill the leader in.
        self.pause_after_commit_s = pause_after_commit_s
        self._queue: asyncio.Queue[list[Firing]] = asyncio.Queue()
        self._changed: set[str] | None = None  # ids changed while loading
        self._tasks: list[asyncio.Task[None]] = []
        self._loading: asyncio.Task[None] | None = None
        self._in_flight: set[uuid.UUID] = set()  # the writer's, from commit to push
        # Per running sweep: what the writer published since that sweep read the outbox.
        self._published_during: list[set[uuid.UUID]] = []
        self._webhook_due = False
        self._finishing = asyncio.Event()

    # -- the reign ---------------------------------------------------------------------

    def start(self) -> None:
        """Start a reign: load the active alerts in the background, write what fires.

        Loading a large set takes seconds; meanwhile ticks flow and are not evaluated (an
        alert whose price holds fires on the next tick after the load).
        """
        self._changed = set()
        self.engine = None
        self._queue = asyncio.Queue()
        self._finishing = asyncio.Event()
        self._loading = asyncio.create_task(self._load(), name="alerts-load")
        self._tasks = [
            self._loading,
            asyncio.create_task(self._write(), name="alerts-write"),
            asyncio.create_task(self._sweep(), name="alerts-sweep"),
        ]

    async def _load(self) -> None:
        retry = Backoff(_RETRY_BASE_S, _RETRY_CAP_S)
        while True:
            engine = AlertEngine()
            try:
                await load_active(engine)
                break
            except Exception as exc:  # the database is away: keep trying, ticks still flow
                log.warning("alerts_not_loaded", error=str(exc))
                await asyncio.sleep(retry.next())
        self.engine = engine
        changed, self._changed = self._changed or set(), None
        for alert_id in changed:
            await self.reload(alert_id)
        LOADED.set(len(engine))
        log.info("alerts_loaded", count=len(engine))

    async def finish(self) -> None:
        """End the reign gracefully (ticks no longer come): what fired is committed and
        published, and a sweep under way completes; nothing is cut off mid-publish, so a
        successor neither misses a firing nor pushes one again. Then :meth:`stop`."""
        self._finishing.set()
        self._queue.put_nowait([])  # wakes the writer, queued after every firing
        if self._loading is not None:
            self._loading.cancel()  # it only reads: nothing to finish
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.stop()

    async def stop(self) -> None:
        """End the reign at once (the lease is lost): a firing cut off between its commit
        and its publish is published by the next leader's sweep (at least once)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.engine = None
        LOADED.set(0)

    def on_tick(self, tick: Tick) -> None:
        if self.engine is not None:
            fired = self.engine.on_tick(tick.symbol, tick.price, tick.ts)
            if fired:
                self._queue.put_nowait(fired)

    async def on_change(self, data: bytes) -> None:
        """A bus event from the API: re-read that alert (the database is the truth)."""
        try:
            alert_id = str(uuid.UUID(orjson.loads(data)["id"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("undecodable_alert_change")
            return
        if self._changed is not None:
            self._changed.add(alert_id)
        elif self.engine is not None:
            await self.reload(alert_id)

    async def reload(self, alert_id: str) -> None:
        alert = await Alert.get_or_none(id=alert_id)
        if self.engine is None:
            return
        self.engine.remove(alert_id)
        if alert is not None and alert.status == "active":
            _arm(self.engine, spec_of(alert))
        LOADED.set(len(self.engine))

    # -- durable first, then published -------------------------------------------------

    async def _write(self) -> None:
        while not (self._finishing.is_set() and self._queue.empty()):
            for firing in await self._queue.get():
                # In flight from before its commit: a sweep that reads the row between the
                # commit and the push leaves the push to the writer (else two copies).
                notification_id = uuid.uuid4()
                self._in_flight.add(notification_id)
                try:
                    notification = await self._commit_until_done(firing, notification_id)
                    if notification is None:
                        continue
                    if self._webhook_due:
                        self._webhook_due = False
                        with contextlib.suppress(BusError):
                            await self.bus.publish(channels.WEBHOOKS_DUE, b"")
                    if self.pause_after_commit_s:
                        await asyncio.sleep(self.pause_after_commit_s)
                    if await self.publish(notification):
                        for published in self._published_during:
                            published.add(notification.id)
                except Exception:  # never let one firing stop the writer for the reign
                    log.exception("alert_firing_failed", alert_id=firing.alert_id)
                finally:
                    self._in_flight.discard(notification_id)

    async def _commit_until_done(
        self, firing: Firing, notification_id: uuid.UUID
    ) -> Notification | None:
        """The engine has let the alert go: keep trying until the database takes it (a
        one-shot alert would otherwise wait for the next leader to be evaluated again)."""
        retry = Backoff(_RETRY_BASE_S, _RETRY_CAP_S)
        while True:
            try:
                return await self.commit(firing, notification_id)
            except Exception as exc:
                log.warning("alert_firing_not_committed", alert_id=firing.alert_id, error=str(exc))
                await asyncio.sleep(retry.next())

    async def commit(self, firing: Firing, notification_id: uuid.UUID) -> Notification | None:
        """Count the firing and write its notification (``notification_id``) with its
        outbox rows, in one transaction; None when the alert may not fire (any more)."""
        now = datetime.now(UTC)
        async with in_transaction():
            alert = (
                await Alert.filter(id=firing.alert_id, status="active").select_for_update().first()
            )
            if alert is None:  # deleted or disabled since the engine saw it
                if self.engine is not None:
                    self.engine.remove(firing.alert_id)
                    LOADED.set(len(self.engine))
                return None
            if (
                alert.last_fired_ts is not None
                and firing.ts < alert.last_fired_ts + alert.cooldown_s * 1000
            ):
                return None  # fired already within its cooldown (a stale reload, two leaders)
            alert.trigger_count += 1
            alert.last_triggered_at = now
            alert.last_fired_ts = firing.ts
            alert.crossed_back = False
            if not alert.repeat:
                alert.status = "triggered"
            await alert.save(
                update_fields=[
                    "trigger_count",
                    "last_triggered_at",
                    "last_fired_ts",
                    "crossed_back",
                    "status",
                    "updated_at",
                ]
            )
            title, body = _describe(firing)
            notification = await Notification.create(
                id=notification_id,
                user_id=alert.user_id,  # type: ignore[attr-defined]
                kind="price_alert",
                title=title,
                body=body,
                data={
                    "alert_id": firing.alert_id,
                    "symbol": firing.symbol,
                    "condition": firing.condition,
                    "threshold": decimal_str(firing.threshold),
                    "price": decimal_str(firing.price),
                    "ts": firing.ts,
                },
                created_at=now,
            )
            kinds = ["publish"]
            user = await User.get(id=alert.user_id)  # type: ignore[attr-defined]
            if user.webhook_url:
                kinds.append("webhook")
                self._webhook_due = True
            for kind in kinds:
                await OutboxItem.create(
                    id=uuid.uuid4(),
                    kind=kind,
                    notification_id=notification.id,
                    user_id=user.id,
                    created_at=now,
                    due_at=now,
                )
        FIRED.inc()
        return notification

    async def publish(self, notification: Notification) -> bool:
        """Push to the user's sockets (every instance); mark the outbox row done."""
        user_id = str(notification.user_id)  # type: ignore[attr-defined]
        # The alert's state and the notification show in the user's lists: their cached
        # pages go before the push, so a client that reads the list on a push sees it. Here,
        # not in commit(): the writer publishes what it committed, and the sweep what a
        # leader left behind, so each commit is followed by one of the two.
        await user_changed(self.bus, user_id)
        try:
            await self.bus.publish(
                channels.notifications(user_id), orjson.dumps(notification_dict(notification))
            )
        except BusError as exc:
            log.warning("notification_not_published", error=str(exc))
            return False
        PUBLISHED.inc()
        await OutboxItem.filter(
            notification_id=notification.id, kind="publish", done_at__isnull=True
        ).update(done_at=datetime.now(UTC))
        return True

    async def publish_pending(self) -> int:
        """Publish what a crash or a Redis outage left in the outbox; how many went out."""
        horizon = datetime.now(UTC) - PUBLISH_HORIZON
        # A row read as pending may be published by the writer before this loop reaches it
        # (it was in flight during the read and is done by then): the writer says so here.
        published = set[uuid.UUID]()
        self._published_during.append(published)
        try:
            pending = (
                await OutboxItem.filter(
                    kind="publish", done_at__isnull=True, failed_at__isnull=True
                )
                .filter(created_at__gte=horizon)
                .order_by("created_at")
                .limit(500)
                .prefetch_related("notification")
            )
            sent = 0
            for item in pending:
                notification_id = item.notification_id  # type: ignore[attr-defined]
                if notification_id in self._in_flight or notification_id in published:
                    continue  # the writer is publishing it now, or has since the read
                if not await self.publish(item.notification):
                    break
                sent += 1
            return sent
        finally:
            self._published_during.remove(published)

    async def _sweep(self) -> None:
        while not self._finishing.is_set():
            try:
                sent = await self.publish_pending()
                if sent:
                    log.info("outbox_notifications_published", count=sent)
            except Exception:
                log.warning("outbox_sweep_failed", exc_info=True)
            await pause(self._finishing, SWEEP_S)
