"""The ingest pipeline and the single leader that runs it.

Exactly one ingest runs across every worker and instance: each worker tries to take the
``ingest`` lease on the bus (see :mod:`coinlink.bus.leases`); the holder renews it every
quarter of its lifetime and stops ingesting the moment a renewal fails, so another worker
takes over within a lease period of a leader's death (as its grant runs out), and at once
after a leader's :meth:`Ingest.stop`, which hands over gracefully and announces the
release. With the in-process bus the only worker simply leads.

The leader reads ticks from the provider in batches (what has queued up while the last
batch was processed, up to ``BATCH_MAX`` ticks), and for each tick: validation (drops are
counted by reason) → rolling 24 h ticker → candles for every interval. After a batch it
publishes, in one bus round trip, the latest ticker and current candle of every symbol the
batch touched, preceded by the candles that closed (``closed: true``, once). Within a
batch only the last state of a channel is published: subscribers get every candle close
and the newest price, not every tick. Closed candles are written to the database in
batches (an upsert on symbol, interval and open time: a candle written twice, by a restart
or a new leader, is updated, never duplicated). Once a second it closes the candles of
quiet symbols (by the market's clock: the newest tick time, so replays of old data work),
publishes the ``tickers`` batch when it has changed and writes a heartbeat that ``/readyz``
reads. A new leader resumes the candles the previous one had open from the bus history, so
a take-over neither loses a candle's first ticks nor rewrites a candle that was already
closed, and hands each symbol's last published price to the provider (the simulator
continues from it).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from decimal import Decimal

import orjson
import structlog
from prometheus_client import Counter, Gauge
from tortoise.exceptions import DBConnectionError

from coinlink import channels
from coinlink.alerts.evaluator import Evaluator
from coinlink.beat import next_beat, sleep_to_beat
from coinlink.bus import RESUBSCRIBED, Bus, BusError, Message, Subscription
from coinlink.bus.leases import Turns, keep_lease, while_held
from coinlink.market import admin_ticks, candle_store
from coinlink.market.pipeline import Pipeline
from coinlink.market.providers.base import Provider
from coinlink.market.tick_validator import REASONS, TickValidator
from coinlink.market.types import INTERVALS, Candle, Tick, candle_from_dict
from coinlink.wire import now_ms

log = structlog.get_logger(logger_name="coinlink.market.ingest")

LEASE = "ingest"
BATCH_MAX = 2000
QUEUE_MAX = 20_000
FLUSH_GRACE_MS = 5_000
# An unchanged `tickers` batch goes out again after this long: a channel a lost write left
# behind (a failover to a replica without it, a deposed leader's late publish) catches up.
TICKERS_REFRESH_S = 15.0
MINUTE_MS = INTERVALS["1m"]
DAY_MS = INTERVALS["1d"]
RESUME_DEPTH = 100  # messages of each candle channel a new leader reads back
MAX_PENDING = 100_000  # closed candles kept while the database is away (about a day)

TICKS = Counter("ingest_ticks_total", "Ticks accepted by the pipeline.")
DROPPED = Counter("ingest_ticks_dropped_total", "Ticks dropped by validation.", ["reason"])
# Every reason exported from the start, at 0: a series that appears only with its first drop
# leaves rate() and alerts on it blind until then.
for _reason in (*REASONS, "malformed"):
    DROPPED.labels(_reason)
LAG = Gauge(
    "ingest_lag_seconds",
    "Seconds between now and the newest accepted tick (leader only).",
    multiprocess_mode="livemax",
)
LEADER = Gauge("ingest_leader", "1 in the worker that runs ingest.", multiprocess_mode="livesum")
PROVIDER_EVENTS = Counter(
    "ingest_provider_events_total",
    "Provider events: malformed frames, drops, sequence gaps, reconnects, stalls.",
    ["provider", "kind"],
)
CANDLES_REFUSED = Counter(
    "ingest_candles_refused_total", "Closed candles the database refused or that overflowed."
)
BACKFILLED = Counter("ingest_candles_backfilled_total", "Closed candles fetched from providers.")


def _decoded_candles(channel: str, messages: list[Message]) -> list[Candle]:
    """The candles of a channel's history; one that is not a candle is skipped (and logged),
    so a stray message can never keep a new leader from taking over."""
    candles = []
    for message in messages:
        try:
            candles.append(candle_from_dict(orjson.loads(message.data)))
        except (ValueError, KeyError, TypeError, ArithmeticError):
            log.warning("undecodable_candle_message", channel=channel, seq=message.seq)
    return candles


class Ingest:
    """Competes for the ingest lease; while holding it, runs the pipeline."""

    def __init__(
        self,
        bus: Bus,
        symbols: list[str],
        provider_factory: Callable[[], Provider | None],
        *,
        lease_ttl_s: float = 5.0,
        validator_factory: Callable[[], TickValidator] | None = None,
        backfill_hours: float = 0.0,
        history_size: int = RESUME_DEPTH,
        alerts: Evaluator | None = None,
    ) -> None:
        self.bus = bus
        self.symbols = symbols
        self.provider_factory = provider_factory
        self.lease_ttl_s = lease_ttl_s
        self.validator_factory = validator_factory or (lambda: TickValidator(symbols=set(symbols)))
        self.backfill_hours = backfill_hours
        self.resume_depth = min(RESUME_DEPTH, history_size)
        # Unique per process and start: two hosts may share a hostname and a pid.
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.token: int | None = None
        self.pipeline: Pipeline | None = None
        self.alerts = alerts  # evaluated by the leader, on the ticks it accepts
        self._pending: list[Candle] = []
        self._storing: asyncio.Task[None] | None = None
        self._tickers_sent = b""  # the ``tickers`` batch published last in this reign
        self._tickers_sent_at = -math.inf  # and when (monotonic)
        self.turns = Turns(bus, LEASE, self.holder, lease_ttl_s, self._reign)

    @property
    def leading(self) -> bool:
        return self.token is not None

    async def run(self) -> None:
        """Until :meth:`stop`: take turns at the lease with the other workers; lead while
        holding it.

        A failed reign (database down, a provider that cannot start) is logged and retried
        after a growing pause, never in a tight loop.
        """
        await self.turns.run()

    async def stop(self) -> None:
        """Hand over: the provider is closed, the ticks already read are processed and
        published, the alerts that fired are committed and published, pending candles are
        stored, then the lease is released (see :meth:`Turns.stop` for a stuck reign)."""
        await self.turns.stop()

    async def _reign(self, token: int, expires_at: float) -> None:
        self.token = token
        log.info("ingest_leading", holder=self.holder, fencing_token=token)
        try:
            await self._lead(token, expires_at)
        except BusError as exc:  # Redis went away: a dependency, not a bug
            log.warning("ingest_reign_lost_bus", fencing_token=token, error=str(exc))
        except Exception:
            log.exception("ingest_reign_failed", fencing_token=token)
        finally:
            LEADER.set(0)
            LAG.set(0)
            self.token = None
            if self._storing is not None:  # a background write still going: let it end
                await asyncio.gather(self._storing, return_exceptions=True)
            await self._store_now()

    async def _lead(self, token: int, expires_at: float) -> None:
        """One reign: ends when the lease can no longer be proven, processing fails or
        :meth:`stop` asks (then gracefully, see :meth:`_hand_over`)."""
        provider = self.provider_factory()
        self.pipeline = Pipeline(self.symbols, self.validator_factory())
        prices = await self._resume_candles(self.pipeline)
        if provider is not None:
            provider.resume(prices)
        queue: asyncio.Queue[Tick | None] = asyncio.Queue(QUEUE_MAX)
        # Listening for admin ticks before announcing the reign: none sent after it is lost.
        admin_ticks = self.bus.subscription()
        try:
            await admin_ticks.subscribe(channels.ADMIN_TICKS)
        except BaseException:
            await admin_ticks.close()  # nothing else would: one connection per retry
            raise
        if self.alerts is not None:
            self.alerts.start()  # loads in the background: ticks flow, the lease is kept
        LEADER.set(1)
        lease = asyncio.create_task(self._keep_lease(token, expires_at), name="ingest-lease")
        process = asyncio.create_task(self._process(queue), name="ingest-process")
        stopping = asyncio.create_task(self.turns.stopping.wait(), name="ingest-stopping")
        inputs = [
            asyncio.create_task(self._admin_ticks(admin_ticks, queue), name="ingest-admin-ticks")
        ]
        if provider is not None:
            inputs.append(asyncio.create_task(self._read(provider, queue), name="ingest-read"))
            inputs.append(asyncio.create_task(self._export_stats(provider), name="ingest-stats"))
            if self.backfill_hours > 0:
                # Alongside live ticks: a slow exchange API must not hold up the feed.
                inputs.append(asyncio.create_task(self._backfill(provider), name="ingest-backfill"))
        try:
            await asyncio.wait([lease, process, stopping], return_when=asyncio.FIRST_COMPLETED)
            if stopping.done() and not lease.done() and not process.done():
                await self._hand_over(lease, process, inputs, queue)
            for essential in (lease, process):
                if essential.done() and not essential.cancelled() and essential.exception():
                    log.error(
                        "ingest_task_failed",
                        task=essential.get_name(),
                        exc_info=essential.exception(),
                    )
        finally:
            for task in [lease, process, stopping, *inputs]:
                task.cancel()
            await asyncio.gather(lease, process, stopping, *inputs, return_exceptions=True)
            if self.alerts is not None:
                await self.alerts.stop()

    async def _hand_over(
        self,
        lease: asyncio.Task[None],
        process: asyncio.Task[None],
        inputs: list[asyncio.Task[None]],
        queue: asyncio.Queue[Tick | None],
    ) -> None:
        """End a reign for a successor, while the lease is still held (and at once when it
        is not): no tick read is left unpublished, no alert firing is cut off mid-way."""
        for task in inputs:
            task.cancel()
        await asyncio.gather(*inputs, return_exceptions=True)

        async def last_batch() -> None:
            await queue.put(None)  # after every tick read: the end of the last batch
            await process

        await while_held(lease, last_batch())
        if self.alerts is not None:
            await while_held(lease, self.alerts.finish())

    async def _backfill(self, provider: Provider) -> None:
        """Fill the candle history a provider has and the database lacks (closed only)."""
        now = now_ms()
        horizon = now - int(self.backfill_hours * 3_600_000)
        for symbol in self.symbols:
            for interval, length in INTERVALS.items():
                try:
                    latest = await candle_store.latest_open_time(symbol, interval)
                    start = horizon if latest is None else max(horizon, latest + length)
                    rows = await provider.backfill(symbol, interval, start, now)
                except Exception as exc:  # a provider's REST failure must not end the reign
                    log.warning("backfill_failed", symbol=symbol, interval=interval, error=str(exc))
                    await asyncio.sleep(0)  # and other symbols still get their turn
                    continue
                closed = [
                    Candle(symbol, interval, t, t + length - 1, o, h, lo, c, v, n, closed=True)
                    for t, o, h, lo, c, v, n in rows
                    if t + length <= now and t >= start
                ]
                # Never over a candle the live pipeline wrote: history only fills holes.
                with contextlib.suppress(Exception):
                    await candle_store.store_candles(closed, overwrite=False)
                    BACKFILLED.inc(len(closed))

    async def _resume_candles(self, pipeline: Pipeline) -> dict[str, Decimal]:
        """Take over where the previous leader stopped, from the bus history; the last
        price it published of each symbol (the close of its newest candle).

        Closed candles it published are stored again (an idempotent upsert: one that
        closed just before it died may not have reached the database yet); the newest
        candle of each channel is resumed if open, or marks its period as published.
        """
        resumed, closed, prices = 0, list[Candle](), dict[str, Decimal]()
        for symbol, builder in pipeline.candles.items():
            for interval in INTERVALS:
                channel = channels.candles(symbol, interval)
                try:
                    last = await self.bus.last_seq(channel)
                    messages = await self.bus.history(channel, max(0, last - self.resume_depth))
                except BusError:
                    continue
                candles = _decoded_candles(channel, messages or [])
                closed.extend(c for c in candles if c.closed)
                if candles:
                    builder.restore(candles[-1])
                    resumed += 1
                    # Every interval's newest candle closed at the last price: one will do.
                    prices.setdefault(symbol, candles[-1].close)
        self._pending.extend(closed)
        if resumed:
            log.info("ingest_candles_resumed", channels=resumed, closed_restored=len(closed))
        await self._resume_tickers(pipeline, closed)
        return prices

    async def _resume_tickers(self, pipeline: Pipeline, recent: list[Candle]) -> None:
        """Rebuild each symbol's rolling 24 h statistics from its 1-minute candles.

        Each candle is replayed as four ticks inside its minute (open, high, low, close,
        the volume on the close), so open, high, low and volume are exact; the quote
        volume is approximated by close x volume per minute.
        """
        since = now_ms() - DAY_MS - MINUTE_MS
        for symbol, ticker in pipeline.tickers.items():
            try:
                stored = await candle_store.minutes_since(symbol, since)
            except Exception:
                log.warning("ticker_history_unavailable", symbol=symbol, exc_info=True)
                continue
            minutes = {c.open_time: c for c in stored}
            minutes.update(
                {c.open_time: c for c in recent if c.symbol == symbol and c.interval == "1m"}
            )
            current = pipeline.candles[symbol].current("1m")
            if current is not None:
                minutes[current.open_time] = current
            for t in sorted(minutes):
                c = minutes[t]
                zero = Decimal(0)
                for offset, price, volume in (
                    (0, c.open, zero),
                    (1, c.high, zero),
                    (2, c.low, zero),
                    (3, c.close, c.volume),
                ):
                    ticker.add(Tick(symbol, price, volume, t + offset, source="history"))

    async def _keep_lease(self, token: int, expires_at: float) -> None:
        await keep_lease(self.bus, LEASE, self.holder, token, self.lease_ttl_s, expires_at)

    async def _admin_ticks(
        self, subscription: Subscription, queue: asyncio.Queue[Tick | None]
    ) -> None:
        """Ticks injected through the admin API on any worker reach the leader here."""
        try:
            async for message in subscription:
                if message.channel == RESUBSCRIBED:
                    continue  # admin ticks sent while Redis was away are gone: they are live
                try:
                    tick = admin_ticks.decode(message.data)
                except ValueError:
                    DROPPED.labels("malformed").inc()
                    continue
                await queue.put(tick)
        finally:
            await subscription.close()

    async def _export_stats(self, provider: Provider) -> None:
        """Turn the provider's plain counters into Prometheus counters, once a second."""
        seen = dict.fromkeys(provider.stats, 0)
        while True:
            await sleep_to_beat(1.0)
            for kind, value in provider.stats.items():
                if value > seen.get(kind, 0):
                    PROVIDER_EVENTS.labels(provider.name, kind).inc(value - seen.get(kind, 0))
                    seen[kind] = value

    async def _read(self, provider: Provider, queue: asyncio.Queue[Tick | None]) -> None:
        async for tick in provider.ticks():
            await queue.put(tick)

    async def _process(self, queue: asyncio.Queue[Tick | None]) -> None:
        """Batches of ticks until ``None``, which a hand-over queues after the last tick."""
        assert self.pipeline is not None
        pipeline = self.pipeline
        next_second = next_beat(time.monotonic(), 1.0)
        self._tickers_sent, self._tickers_sent_at = b"", -math.inf  # a reign's first goes out
        while True:
            items: list[Tick | None] = []
            # Idle, it sleeps until a tick arrives or the second is up: no 20 ms polling.
            timeout = max(0.0, next_second - time.monotonic())
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that races with the queue's answer, and the worker then never stops.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    items.append(await queue.get())
            while items and len(items) < BATCH_MAX and not queue.empty():
                items.append(queue.get_nowait())
            batch = [tick for tick in items if tick is not None]
            last = len(batch) < len(items)
            alerts = self.alerts
            for tick in batch:
                reason = pipeline.apply(tick)
                if reason is None:
                    TICKS.inc()
                    if alerts is not None:
                        alerts.on_tick(tick)
                else:
                    DROPPED.labels(reason).inc()
            at = now_ms()
            if time.monotonic() >= next_second:
                next_second = next_beat(time.monotonic(), 1.0)
                # Grace: another symbol's ticks may trail the newest by a little.
                if pipeline.market_ms is not None:
                    pipeline.flush_quiet(pipeline.market_ms - FLUSH_GRACE_MS)
                await self._every_second(pipeline, at)
            if batch or pipeline.closed:
                messages, closed = pipeline.take_messages(at)
                self._pending.extend(closed)  # stored even if publishing fails
                try:
                    await self.bus.publish_many(messages)
                except BusError as exc:
                    # The state is kept; the next batch publishes the newest again.
                    log.warning("ingest_publish_failed", error=str(exc))
                if len(self._pending) >= 500:
                    self._store_soon()
            if last:
                return

    async def _every_second(self, pipeline: Pipeline, at: int) -> None:
        """The ``tickers`` batch and the heartbeat. A batch equal to the last one sent goes
        out again only after ``TICKERS_REFRESH_S``: a quiet feed costs the workers and the
        subscribers (almost) nothing."""
        snapshots = pipeline.snapshots(at)
        newest = max((s["ts"] for s in snapshots), default=None)
        if newest is not None:
            LAG.set(max(0.0, (at - newest) / 1000))
        self._store_soon()
        tickers, now = orjson.dumps(snapshots), time.monotonic()
        if tickers != self._tickers_sent or now - self._tickers_sent_at >= TICKERS_REFRESH_S:
            with contextlib.suppress(BusError):  # the next second tries again
                await self.bus.publish(channels.TICKERS, tickers)
                self._tickers_sent, self._tickers_sent_at = tickers, now
        heartbeat = {
            "holder": self.holder,
            "fencing_token": self.token,
            "at": at,
            "newest_tick": newest,
        }
        with contextlib.suppress(BusError):
            await self.bus.set(
                channels.INGEST_HEARTBEAT_KEY, orjson.dumps(heartbeat), ttl_s=self.lease_ttl_s * 3
            )

    def _store_soon(self) -> None:
        """Write pending candles in the background: a slow database never stalls ticks."""
        if self._pending and (self._storing is None or self._storing.done()):
            self._storing = asyncio.create_task(self._store_now(), name="ingest-store")

    async def _store_now(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            await candle_store.store_candles(pending)
            return
        except Exception:
            log.warning("candles_not_stored", count=len(pending), exc_info=True)
        # One bad row must not block the rest: retry one by one, keep what failed for
        # a connection problem, count and drop what the database refuses as data.
        for candle in pending:
            try:
                await candle_store.store_candles([candle])
            except (OSError, DBConnectionError):
                self._pending.append(candle)
            except Exception:
                CANDLES_REFUSED.inc()
        if len(self._pending) > MAX_PENDING:
            CANDLES_REFUSED.inc(len(self._pending) - MAX_PENDING)
            del self._pending[: len(self._pending) - MAX_PENDING]
