"""One client's session on ``/ws``: its messages read in order and answered (the contract's
protocol: ``ping``, ``auth``, ``subscribe`` with ``since``, ``unsubscribe``), on top of the
worker's :class:`~coinlink.realtime.hub.Hub`.

Messages come checked and rate limited from :mod:`coinlink.realtime.inbound`; a bus failure
closes the socket with 1011, so the client reconnects and recovers with ``since``.
"""

from __future__ import annotations

from coinlink import channels
from coinlink.accounts.service import AccountService
from coinlink.accounts.tokens import InvalidToken
from coinlink.bus import BusError
from coinlink.realtime import protocol
from coinlink.realtime.connection import Connection
from coinlink.realtime.hub import Hub
from coinlink.realtime.inbound import Inbound
from coinlink.realtime.protocol import ProtocolError
from config import Settings

_NAMED = 10  # unknown channels an error names (a subscribe may hold a thousand)


class Session:
    """The client's side of one socket: read messages, answer them in order."""

    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        accounts: AccountService,
        conn: Connection,
        inbound: Inbound,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.accounts = accounts
        self.conn = conn
        self.symbols = frozenset(settings.symbols)
        self.inbound = inbound

    async def run(self) -> None:
        conn = self.conn
        while not conn.closing and (raw := await self.inbound.next()) is not None:
            try:
                await self.handle(protocol.parse(raw))
            except ProtocolError as exc:
                conn.reply(protocol.error(exc.code, exc.message, exc.msg_id))
            except BusError:
                self.hub.disconnect(conn, 1011, "temporarily unavailable; reconnect")
                break
        await self.inbound.closed(self._refused)  # a refusal's close, or reading resumed

    def _refused(self, code: int) -> bool:
        """The inbound side is closing the socket (1008: a flood; 1007: not UTF-8)."""
        if code == 1008:
            self.conn.reply(protocol.error("rate_limited", "too many messages; closing"))
        if not self.hub.closing(self.conn, code):
            return False
        self.conn.stop_sending()
        return True

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
        current = self.conn.claims
        # A refused auth leaves an earlier one in place (its own expiry and revocation still
        # close the socket): a failed refresh must not cut notifications. The error says so.
        kept = "" if current is None else f"; the socket stays authenticated as {current.user_id}"
        if claims is None or not await self.accounts.access_allowed(claims):
            raise ProtocolError(
                "invalid_token", f"access token is invalid, expired or revoked{kept}", message.id
            )
        if current is not None and current.user_id != claims.user_id:
            raise ProtocolError(
                "invalid_message",
                f"this connection belongs to another user; open a new one{kept}",
                message.id,
            )
        self.hub.authenticate(self.conn, claims)
        self.conn.reply(protocol.ack(message.id, "auth", user_id=claims.user_id))

    def _channels(self, requested: list[str], msg_id: int) -> list[str]:
        """The channels named, as the server spells them, each once; ``unknown_channel``
        naming every one that does not exist."""
        named = {name: protocol.canonical_channel(name, self.symbols) for name in requested}
        unknown = [name for name, channel in named.items() if channel is None]
        if unknown:
            shown = ", ".join(unknown[:_NAMED]) + (
                f" and {len(unknown) - _NAMED} more" if len(unknown) > _NAMED else ""
            )
            raise ProtocolError("unknown_channel", f"unknown channel: {shown}", msg_id)
        return list(dict.fromkeys(channel for channel in named.values() if channel is not None))

    def _bus_channels(self, names: list[str], msg_id: int) -> list[str]:
        """``names`` on the bus: ``notifications`` is the caller's own channel."""
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
        names = self._channels(message.channels, message.id)
        given = {
            protocol.canonical_channel(name, self.symbols) or name: seq
            for name, seq in message.since.items()
        }
        stray = [name for name in given if name not in names]
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
        since = {channel: given.get(name) for name, channel in zip(names, targets, strict=True)}
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
        names = self._channels(message.channels, message.id)
        for channel in self._bus_channels(names, message.id):
            self.hub.detach(self.conn, channel)
        self.conn.reply(protocol.ack(message.id, "unsubscribe", channels=names))
