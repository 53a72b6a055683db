"""Each worker's hub: ONE bus subscription, fanned out to every local WebSocket.

The hub follows every market channel (it also feeds the worker's :class:`MarketView`, so
REST reads and sockets see the same state), the ``revocations`` control channel, and the
private ``notifications:<user id>`` channel of each user with a local subscriber. For each
message it frames the update once and hands the same bytes to every subscribed socket in a
plain loop (see :mod:`coinlink.realtime.connection`: no awaiting, no task per client).

Sequence numbers come from the bus and are contiguous per channel. The hub checks them: a
gap (messages lost while the subscription reconnected) is filled from the bus history, or,
when history no longer reaches back, the next message goes out as a ``snapshot``; a number
that goes backwards is a duplicate, unless the bus lost its data (Redis restarted empty),
in which case the channel starts again with a ``snapshot``. The last ``history_size``
messages of each followed channel stay in memory, so most ``since`` recoveries need no
round trip.

A background loop flushes lagging sockets, closes those that stay behind (1013), sends
heartbeats to silent ones, closes sockets whose access token has expired, and every
``ws_revalidate_s`` asks the accounts service whether each authenticated socket's session
still holds (revocation events close them at once; this catches what a lost event missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from sanic import Websocket

from coinlink import channels
from coinlink.accounts.tokens import AccessClaims
from coinlink.backoff import Backoff
from coinlink.beat import next_beat
from coinlink.bus import RESUBSCRIBED, Bus, BusError, Message, Subscription
from coinlink.market.types import INTERVALS
from coinlink.market.view import MarketView
from coinlink.observability.metrics import (
    WS_CLOSES,
    WS_CONNECTIONS,
    WS_FANOUT_LATENCY,
    WS_MESSAGES_SENT,
)
from coinlink.realtime import protocol
from coinlink.realtime.connection import Connection, Laggards
from coinlink.wire import now_ms

log = structlog.get_logger(logger_name="coinlink.realtime")

# The close reason of a stopping server: another instance serves the same channels, and
# `since` recovers what was published meanwhile.
RESTART_REASON = "server restarting: reconnect and resubscribe with since"
_TICK_S = 0.05  # how often laggards are flushed
_EXPIRY_S = 1.0  # how often authenticated sockets' tokens are checked
# Silent sockets are looked for every quarter of the heartbeat interval (at least every
# _EXPIRY_S): that look goes over every socket, ~0.3 µs each.
_HEARTBEATS_PER_INTERVAL = 4
# uvloop's timers count whole milliseconds, so one may fire a moment before its time: what
# falls due within this is done in the same wake-up, not in another one at once.
_TIMER_SLACK_S = 0.002
# While the bus is away: 0.5 s doubling to 10 s, jittered (coinlink.backoff) so the hubs of
# every worker do not come back to a restarted Redis in lockstep.
_RETRY_BASE_S = 0.5
_RETRY_CAP_S = 10.0
# How long a subscription whose `since` is ahead of this hub waits for the hub to get there
# (a client back from an instance that had handled more, or this worker just started).
CATCH_UP_S = 2.0


def _as_published(ticker: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in ticker.items() if key not in ("seq", "stale")}


class _Every:
    """One of the upkeep's periodic looks: when it is next due."""

    __slots__ = ("interval_s", "next_at")

    def __init__(self, interval_s: float, first_at: float) -> None:
        self.interval_s = interval_s
        self.next_at = first_at

    def due(self, now: float) -> bool:
        """Whether the look is due at ``now`` (within the timer slack); if so, the next
        one is at the next beat of its interval (:mod:`coinlink.beat`)."""
        if now + _TIMER_SLACK_S < self.next_at:
            return False
        self.next_at = next_beat(now + _TIMER_SLACK_S, self.interval_s)
        return True


@dataclass(frozen=True, slots=True)
class HubSettings:
    history_size: int = 100
    heartbeat_s: float = 10.0
    revalidate_s: float = 60.0
    slow_close_s: float = 10.0
    buffer_bytes: int = 256 * 1024


class Hub:
    def __init__(
        self,
        bus: Bus,
        view: MarketView,
        settings: HubSettings,
        session_valid: Callable[[AccessClaims], Awaitable[bool]],
    ) -> None:
        self.bus = bus
        self.view = view
        self.settings = settings
        self.session_valid = session_valid
        self.market_channels = [
            *(channels.ticker(s) for s in view.symbols),
            *(channels.candles(s, i) for s in view.symbols for i in INTERVALS),
            channels.TICKERS,
        ]
        self.connections: set[Connection] = set()
        self.per_ip: Counter[str] = Counter()
        self.subscribers: dict[str, set[Connection]] = {}  # bus channel -> sockets
        self.last: dict[str, int] = {}  # bus channel -> newest seq handled
        self.recent: dict[str, deque[tuple[int, bytes]]] = {}  # bus channel -> (seq, data)
        self.active: dict[str, float] = {}  # bus channel -> monotonic time of last message
        self.laggards = Laggards()
        self._by_session: dict[str, set[Connection]] = {}
        self._private: dict[str, asyncio.Future[None]] = {}  # followed private channels
        # Control channels (revocations, alert changes...): one callback each.
        self._handlers: dict[str, Callable[[bytes], None]] = {
            channels.REVOCATIONS: self._on_revocation
        }
        self._subscription: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._revalidating: asyncio.Task[None] | None = None
        self._advanced: asyncio.Event | None = None  # set at the next message handled

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Follow the bus in the background (a worker boots even while Redis is away)."""
        self._tasks = [
            asyncio.create_task(self._follow(), name="hub-follow"),
            asyncio.create_task(self._maintain(), name="hub-maintain"),
        ]

    async def close(self) -> None:
        """Close every socket with 1001 (going away) and the reconnect hint, then stop
        following the bus."""
        for conn in list(self.connections):
            self.disconnect(conn, 1001, RESTART_REASON)
        if self._subscription is not None:
            with contextlib.suppress(BusError):
                await self._subscription.close()
        for task in [*self._tasks, self._revalidating]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _follow(self) -> None:
        retry = Backoff(_RETRY_BASE_S, _RETRY_CAP_S)
        while True:
            try:
                if self._subscription is None:
                    subscription = self.bus.subscription()
                    await subscription.subscribe(
                        *self.market_channels, *self._handlers, *self._private
                    )
                    self._subscription = subscription
                    # Subscribed first, then the newest state: nothing published in
                    # between is missed (what arrives twice is dropped by its seq).
                    await self._load([*self._private])
                    retry.reset()
                async for message in self._subscription:
                    if message.channel == RESUBSCRIBED:
                        await self._catch_up()
                    else:
                        await self._on_message(message)
                return  # closed
            except BusError as exc:
                log.warning("hub_waiting_for_bus", error=str(exc))
                if self._subscription is not None:
                    with contextlib.suppress(BusError):
                        await self._subscription.close()
                    self._subscription = None
                await asyncio.sleep(retry.next())

    async def _catch_up(self) -> None:
        """After a lost connection: take from history what every followed channel missed."""
        log.info("hub_catching_up")
        await self._load([*self._private])

    async def _load(self, extra: list[str] | None = None) -> None:
        for channel in [*self.market_channels, *(extra or [])]:
            last = await self.bus.last_seq(channel)
            if last != self.last.get(channel, 0):
                # After a reconnect this fills the gap (or resets) like any other message.
                for message in await self.bus.history(channel, last - 1) or []:
                    await self._on_message(message)

    # -- the fan-out ---------------------------------------------------------------------

    async def _on_message(self, message: Message) -> None:
        channel = message.channel
        last = self.last.get(channel)
        if last is None or message.seq == last + 1:
            self._accept(message)
        elif message.seq > last + 1:
            await self._fill_gap(message, last)
        elif await self.bus.last_seq(channel) < last:
            # The bus lost its data (Redis restarted empty): the numbering starts again.
            log.warning("bus_sequence_reset", channel=channel, seq=message.seq, last=last)
            self.recent.pop(channel, None)
            self._accept(message, kind="snapshot")
        # else: a duplicate of something already handled

    async def _fill_gap(self, message: Message, last: int) -> None:
        missed = await self.bus.history(message.channel, last)
        if missed is None:
            log.warning("bus_gap_beyond_history", channel=message.channel, last=last)
            self.recent.pop(message.channel, None)
            self._accept(message, kind="snapshot")
            return
        for item in missed:
            if item.seq <= message.seq:
                self._accept(item)

    def _accept(self, message: Message, kind: str = "update") -> None:
        channel, seq, data = message.channel, message.seq, message.data
        if channel.startswith(channels.PRIVATE_PREFIX) and channel not in self._private:
            return  # still in flight after the last local subscriber left
        self.last[channel] = seq
        self.active[channel] = time.monotonic()
        if self._advanced is not None:
            self._advanced.set()
            self._advanced = None
        ring = self.recent.get(channel)
        if ring is None:
            ring = self.recent[channel] = deque(maxlen=self.settings.history_size)
        ring.append((seq, data))
        handler = self._handlers.get(channel)
        if handler is not None:
            handler(data)
            return
        if not channel.startswith(channels.PRIVATE_PREFIX):
            self.view.apply(channel, seq, data)
        sockets = self.subscribers.get(channel)
        if not sockets:
            return
        name = channels.NOTIFICATIONS if channel.startswith(channels.PRIVATE_PREFIX) else channel
        frame = protocol.update(name, seq, data, kind)
        key = channel if protocol.conflatable(channel) else None
        hopeless = [conn for conn in sockets if not conn.send(frame, key)]
        WS_MESSAGES_SENT.inc(len(sockets))
        if message.published_us:
            WS_FANOUT_LATENCY.observe(max(0.0, time.time() - message.published_us / 1e6))
        for conn in hopeless:
            self.disconnect(conn, 1013, "too slow to keep up")

    def on(self, channel: str, handler: Callable[[bytes], None]) -> None:
        """Hand every message of a control ``channel`` to ``handler`` (before :meth:`start`)."""
        self._handlers[channel] = handler

    # -- connections -----------------------------------------------------------------

    def connect(self, ws: Websocket, ip: str) -> Connection:
        """Register a freshly upgraded socket."""
        conn = Connection(ws, ip, self.settings.buffer_bytes, self.laggards)
        self.connections.add(conn)
        self.per_ip[conn.ip] += 1
        WS_CONNECTIONS.inc()
        return conn

    def remove(self, conn: Connection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        self.laggards.discard(conn)
        self.per_ip[conn.ip] -= 1
        if self.per_ip[conn.ip] <= 0:
            del self.per_ip[conn.ip]
        for channel in list(conn.channels):
            self.detach(conn, channel)
        self._forget_session(conn)
        WS_CONNECTIONS.dec()

    def disconnect(self, conn: Connection, code: int, reason: str) -> None:
        """Close at once: the close frame goes after what is already in the transport."""
        if self.closing(conn, code):
            conn.close(code, reason)

    def closing(self, conn: Connection, code: int) -> bool:
        """Count a close of ``conn`` and take it off the laggards; False if it was closing
        already. The caller sends the close frame."""
        if conn.closing:
            return False
        WS_CLOSES.labels(str(code)).inc()
        self.laggards.discard(conn)
        return True

    def authenticate(self, conn: Connection, claims: AccessClaims) -> None:
        self._forget_session(conn)
        conn.claims = claims
        self._by_session.setdefault(claims.session_id, set()).add(conn)

    def _forget_session(self, conn: Connection) -> None:
        if conn.claims is None:
            return
        sockets = self._by_session.get(conn.claims.session_id)
        if sockets is not None:
            sockets.discard(conn)
            if not sockets:
                del self._by_session[conn.claims.session_id]

    def _on_revocation(self, data: bytes) -> None:
        try:
            sessions = orjson.loads(data)["sessions"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("undecodable_revocation")
            return
        for session_id in sessions if isinstance(sessions, list) else []:
            for conn in list(self._by_session.get(str(session_id), ())):
                self.disconnect(conn, 1008, "session revoked")

    # -- subscriptions ----------------------------------------------------------------

    async def follow_private(self, channel: str) -> None:
        """Make sure the worker follows ``channel`` (a user's notifications) on the bus."""
        pending = self._private.get(channel)
        if pending is None:
            pending = self._private[channel] = asyncio.get_running_loop().create_future()
            try:
                if self._subscription is not None:
                    await self._subscription.subscribe(channel)
                last = await self.bus.last_seq(channel)
                if channel not in self.last or not self.subscribers.get(channel):
                    self.last[channel] = last
            except BaseException as exc:
                del self._private[channel]
                pending.set_exception(exc)
                pending.exception()  # retrieved: only the waiters below care
                raise
            pending.set_result(None)
        await asyncio.shield(pending)

    async def prefetch(self, channel: str, since: int) -> list[Message] | None:
        """History a ``since`` recovery needs that the in-memory ring no longer holds."""
        if since > self.last.get(channel, 0):
            await self._catch_up_to(channel, since)
        ring = self.recent.get(channel)
        if since >= self.last.get(channel, 0) or (ring and ring[0][0] <= since + 1):
            return []
        return await self.bus.history(channel, since)

    async def _catch_up_to(self, channel: str, seq: int) -> None:
        """Until this hub has handled ``seq`` of ``channel`` (for at most CATCH_UP_S): the
        client has it already, and a snapshot would throw its continuity away."""
        if seq > await self.bus.last_seq(channel):
            return  # never published: the client gets a snapshot
        deadline = time.monotonic() + CATCH_UP_S
        while self.last.get(channel, 0) < seq:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._advanced is None:
                self._advanced = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._advanced.wait(), remaining)

    def attach(
        self, conn: Connection, channel: str, since: int | None, fetched: list[Message] | None
    ) -> tuple[bool, list[bytes]]:
        """Subscribe ``conn`` to ``channel``; (recovered, the frames it needs first).

        Synchronous on purpose: between reading the state and joining the subscribers
        nothing else runs, so the next live update follows these frames without a gap.
        """
        name = channels.NOTIFICATIONS if channel.startswith(channels.PRIVATE_PREFIX) else channel
        last = self.last.get(channel, 0)
        conn.channels.add(channel)
        self.subscribers.setdefault(channel, set()).add(conn)
        # What these frames bring supersedes a conflated update still waiting to be sent.
        if conn.conflated.pop(channel, None) is not None:
            conn.pending_bytes = sum(map(len, conn.queue)) + sum(map(len, conn.conflated.values()))
        if since is not None and since <= last:
            missed = self._missed(channel, since, fetched or [])
            # A replay must fit in the socket's budget with room to spare, or the client
            # would be closed (1013) and come back with the same `since`, again and again.
            if missed is not None and sum(len(d) for _, d in missed) <= conn.budget // 2:
                return True, [protocol.update(name, seq, data) for seq, data in missed]
        return False, [protocol.update(name, last, self._snapshot_data(channel), "snapshot")]

    def _missed(
        self, channel: str, since: int, fetched: list[Message]
    ) -> list[tuple[int, bytes]] | None:
        """Messages after ``since`` up to the newest handled, or None when some are gone."""
        wanted = self.last.get(channel, 0)
        # History read moments ago may run ahead of what this hub has handled: the rest
        # comes live.
        found = [(m.seq, m.data) for m in fetched if since < m.seq <= wanted]
        after = found[-1][0] if found else since
        found += [item for item in self.recent.get(channel, ()) if after < item[0] <= wanted]
        if [seq for seq, _ in found] != list(range(since + 1, wanted + 1)):
            return None
        return found

    def _snapshot_data(self, channel: str) -> bytes:
        """The channel's current state: its newest message, exactly as an update carries it."""
        if channel.startswith(channels.PRIVATE_PREFIX):
            # The REST API holds the notifications; the snapshot gives the seq to follow.
            return b"null"
        ring = self.recent.get(channel)
        if ring:
            return ring[-1][1]
        # Before the channel's first message: what the view knows, in the shape updates
        # have (the view adds seq and stale for REST; the channel's data has neither).
        now = now_ms()
        kind, _, symbol = channel.partition(":")
        if kind == "ticker":
            return orjson.dumps(_as_published(self.view.ticker(symbol, now)))
        if channel == channels.TICKERS:
            return orjson.dumps(
                [_as_published(self.view.ticker(s, now)) for s in self.view.tickers]
            )
        return b"null"

    def detach(self, conn: Connection, channel: str) -> None:
        conn.channels.discard(channel)
        dropped = conn.conflated.pop(channel, None)  # nothing of it after the ack
        if dropped is not None:
            conn.pending_bytes -= len(dropped)
        sockets = self.subscribers.get(channel)
        if sockets is not None:
            sockets.discard(conn)
            if sockets:
                return
            del self.subscribers[channel]
        self.release(channel)

    def release(self, channel: str) -> None:
        """Stop following a private channel that no local socket subscribes to any more."""
        pending = self._private.get(channel)
        if self.subscribers.get(channel) or pending is None or not pending.done():
            return
        del self._private[channel]
        self.last.pop(channel, None)
        self.recent.pop(channel, None)
        self.active.pop(channel, None)
        if self._subscription is not None:
            task = asyncio.get_running_loop().create_task(self._unfollow(channel))
            self._tasks.append(task)
            task.add_done_callback(self._tasks.remove)

    async def _unfollow(self, channel: str) -> None:
        if self._subscription is not None and channel not in self._private:
            with contextlib.suppress(BusError):
                await self._subscription.unsubscribe(channel)

    # -- upkeep ------------------------------------------------------------------------

    async def _maintain(self) -> None:
        now = time.monotonic()
        expiry = _Every(_EXPIRY_S, now)
        heartbeats = _Every(
            max(_EXPIRY_S, self.settings.heartbeat_s / _HEARTBEATS_PER_INTERVAL), now
        )
        revalidation = _Every(self.settings.revalidate_s, now + self.settings.revalidate_s)
        while True:
            if self.laggards:
                await asyncio.sleep(_TICK_S)
            else:  # idle: no wake-ups until a socket lags or the next look is due
                self.laggards.arrived.clear()
                due = min(expiry.next_at, heartbeats.next_at)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, due - time.monotonic())):
                        await self.laggards.arrived.wait()
                if self.laggards:  # not for a sweep that is due: one wake-up, not two
                    await asyncio.sleep(_TICK_S)  # give a fresh laggard's transport a moment
            now = time.monotonic()
            for conn in list(self.laggards):
                if conn.closing or conn.flush():
                    self.laggards.discard(conn)
                elif now - (conn.lagging_since or now) > self.settings.slow_close_s:
                    self.disconnect(conn, 1013, "too slow to keep up")
            if expiry.due(now):
                self._close_expired()
            if heartbeats.due(now):
                self._send_heartbeats(now)
            idle = self._revalidating is None or self._revalidating.done()
            if idle and revalidation.due(now):
                self._revalidating = asyncio.create_task(self._revalidate(), name="hub-revalidate")

    def _close_expired(self) -> None:
        """Close the sockets whose access token has expired (only authenticated ones have
        one: they are the ones known by session)."""
        wall = time.time()
        for sockets in list(self._by_session.values()):
            for conn in list(sockets):
                claims = conn.claims
                if claims is not None and claims.expires_at <= wall:
                    self.disconnect(conn, 1008, "access token expired")

    def _send_heartbeats(self, now: float) -> None:
        """A heartbeat to every socket that got nothing for ``heartbeat_s``."""
        silent_since = now - self.settings.heartbeat_s
        # Once per look, not per socket: this goes over every connection.
        live = {channel for channel, at in self.active.items() if at > silent_since}
        frame = b""
        for conn in list(self.connections):
            if conn.closing:
                continue
            if conn.last_sent > silent_since or not live.isdisjoint(conn.channels):
                continue
            frame = frame or protocol.heartbeat()
            if not conn.reply(frame):
                self.disconnect(conn, 1013, "too slow to keep up")

    async def _revalidate(self) -> None:
        for conn in [c for c in self.connections if c.claims is not None and not c.closing]:
            claims = conn.claims
            if claims is None:
                continue
            try:
                valid = await self.session_valid(claims)
            except Exception as exc:  # the database is away: try again next round
                log.warning("ws_revalidation_failed", error=str(exc))
                return
            if not valid and conn.claims is claims:
                self.disconnect(conn, 1008, "session revoked")
