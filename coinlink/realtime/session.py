"""One client's session on ``/ws``: its messages read in order and answered (the contract's
protocol: ``ping``, ``auth``, ``subscribe`` with ``since``, ``unsubscribe``), on top of the
worker's :class:`~coinlink.realtime.hub.Hub`.

Inbound messages are rate limited per socket (close 1008 past the burst); a bus failure
closes the socket with 1011, so the client reconnects and recovers with ``since``.
"""

from __future__ import annotations

import asyncio
import contextlib

from websockets.exceptions import ConnectionClosed

from coinlink import channels
from coinlink.accounts.service import AccountService
from coinlink.accounts.tokens import InvalidToken
from coinlink.bus import BusError
from coinlink.realtime import protocol
from coinlink.realtime.connection import Connection
from coinlink.realtime.hub import Hub
from coinlink.realtime.protocol import ProtocolError
from config import Settings

DRAIN_S = 2.0


class Session:
    """The client's side of one socket: read messages, answer them in order."""

    def __init__(
        self, settings: Settings, hub: Hub, accounts: AccountService, conn: Connection
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.accounts = accounts
        self.conn = conn
        self.symbols = frozenset(settings.symbols)

    async def run(self) -> None:
        conn, settings = self.conn, self.settings
        while not conn.closing:
            raw = await conn.ws.recv()
            if raw is None or conn.closing:
                continue
            if not conn.allow_inbound(settings.ws.inbound_rate, settings.ws.inbound_burst):
                conn.reply(protocol.error("rate_limited", "too many messages; closing"))
                await self._close_reading(1008, "too many messages")
                return
            try:
                await self.handle(protocol.parse(raw))
            except ProtocolError as exc:
                conn.reply(protocol.error(exc.code, exc.message, exc.msg_id))
            except BusError:
                self.hub.disconnect(conn, 1011, "temporarily unavailable; reconnect")
                return

    async def _close_reading(self, code: int, reason: str) -> None:
        """Close with the handshake, reading and dropping what the client still sends until
        its close frame (at most :data:`DRAIN_S`): a socket closed with unread data is reset
        by the kernel, and the client would never read the close frame that says why."""
        if not self.hub.closing(self.conn, code):
            return
        self.conn.stop_sending()
        with contextlib.suppress(TimeoutError, ConnectionClosed):
            async with asyncio.timeout(DRAIN_S):
                await self.conn.ws.close(code, reason)
                while await self.conn.ws.recv() is not None:
                    pass

    async def handle(self, message: protocol.ClientMessage) -> None:
        if isinstance(message, protocol.Ping):
            self.conn.reply(protocol.pong(message.id))
        elif isinstance(message, protocol.Auth):
            await self.auth(message)
        elif isinstance(message, protocol.Subscribe):
            await self.subscribe(message)
        else:
            self.unsubscribe(message)

    async def auth(self, message: protocol.Auth) -> None:
        try:
            claims = self.accounts.tokens.decode_access(message.token)
        except InvalidToken:
            claims = None
        if claims is None or not await self.accounts.access_allowed(claims):
            raise ProtocolError(
                "invalid_token", "access token is invalid, expired or revoked", message.id
            )
        current = self.conn.claims
        if current is not None and current.user_id != claims.user_id:
            raise ProtocolError(
                "invalid_message",
                "this connection belongs to another user; open a new one",
                message.id,
            )
        self.hub.authenticate(self.conn, claims)
        self.conn.reply(protocol.ack(message.id, "auth", user_id=claims.user_id))

    def _bus_channels(self, names: list[str], msg_id: int) -> list[str]:
        unknown = [name for name in names if not protocol.channel_is_known(name, self.symbols)]
        if unknown:
            raise ProtocolError("unknown_channel", f"unknown channel: {', '.join(unknown)}", msg_id)
        if channels.NOTIFICATIONS not in names:
            return names
        if self.conn.claims is None:
            raise ProtocolError(
                "unauthorized", "authenticate before subscribing to notifications", msg_id
            )
        private = channels.notifications(self.conn.claims.user_id)
        return [private if name == channels.NOTIFICATIONS else name for name in names]

    async def subscribe(self, message: protocol.Subscribe) -> None:
        conn, hub = self.conn, self.hub
        names = list(dict.fromkeys(message.channels))
        stray = [name for name in message.since if name not in names]
        if stray:
            raise ProtocolError(
                "invalid_message",
                f"since names unsubscribed channels: {', '.join(stray)}",
                message.id,
            )
        targets = self._bus_channels(names, message.id)
        if len(conn.channels | set(targets)) > self.settings.ws.max_subscriptions:
            raise ProtocolError(
                "too_many_subscriptions",
                f"at most {self.settings.ws.max_subscriptions} subscriptions per connection",
                message.id,
            )
        since = {
            channel: message.since.get(name) for name, channel in zip(names, targets, strict=True)
        }
        attached = False
        try:
            fetched = {}
            for channel in targets:
                if channel.startswith(channels.PRIVATE_PREFIX):
                    await hub.follow_private(channel)
                wanted = since[channel]
                if wanted is not None:
                    fetched[channel] = await hub.prefetch(channel, wanted)
            if conn.closing:
                return
            # From here to the last frame nothing awaits: the live updates that follow
            # continue exactly where these frames end.
            results, frames = [], []
            for name, channel in zip(names, targets, strict=True):
                recovered, first = hub.attach(conn, channel, since[channel], fetched.get(channel))
                results.append({"channel": name, "recovered": recovered})
                frames += first
            attached = True
        finally:
            if not attached:  # closed, cancelled or the bus failed half-way: follow nothing
                for channel in targets:
                    hub.release(channel)
        conn.reply(protocol.ack(message.id, "subscribe", channels=results))
        for frame in frames:
            if not conn.send(frame):
                hub.disconnect(conn, 1013, "too slow to keep up")
                return

    def unsubscribe(self, message: protocol.Unsubscribe) -> None:
        names = list(dict.fromkeys(message.channels))
        for channel in self._bus_channels(names, message.id):
            self.hub.detach(self.conn, channel)
        self.conn.reply(protocol.ack(message.id, "unsubscribe", channels=names))
