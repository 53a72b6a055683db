"""One client WebSocket as the hub sees it: who it is, what it follows, what it still owes.

Sending is synchronous: a frame goes straight into the socket's transport
(:mod:`coinlink.realtime.transport`) while the transport's own buffer is below
:data:`HIGH_WATER`. Past that the client is *lagging*:
frames wait in the connection's own queue instead, ticker channels conflated (one pending
frame per channel, the newest), everything else in order. The hub's maintenance loop
flushes laggards once their transport has drained, and closes with 1013 a socket whose
queue outgrows its byte budget or that stays behind too long. Nothing here awaits, so a
slow socket can never hold up the fan-out to the others.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING

from sanic import Websocket

from coinlink.observability.metrics import WS_CONFLATIONS, WS_SLOW_CLOSES
from coinlink.realtime.transport import close_now, transport_of, write

if TYPE_CHECKING:
    from asyncio import Transport

    from coinlink.accounts.tokens import AccessClaims

# The transport buffer a socket may fill before its frames queue with us instead (uvloop's
# own default high-water mark); it drains when below half of it.
HIGH_WATER = 64 * 1024
LOW_WATER = HIGH_WATER // 2


class Laggards(set["Connection"]):
    """The sockets waiting to be flushed; adding one wakes the hub's upkeep loop."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

    def add(self, conn: Connection) -> None:
        super().add(conn)
        self.arrived.set()


class Connection:
    __slots__ = (
        "budget",
        "channels",
        "claims",
        "closing",
        "conflated",
        "ip",
        "laggards",
        "lagging_since",
        "last_sent",
        "pending_bytes",
        "queue",
        "transport",
        "ws",
    )

    def __init__(self, ws: Websocket, ip: str, budget: int, laggards: Laggards) -> None:
        self.ws = ws
        self.transport: Transport = transport_of(ws)
        self.ip = ip
        self.claims: AccessClaims | None = None  # set by the ``auth`` op
        self.channels: set[str] = set()  # bus channel names
        self.laggards = laggards  # the hub's set of sockets to flush
        self.lagging_since: float | None = None
        self.queue: deque[bytes] = deque()
        self.conflated: dict[str, bytes] = {}
        self.pending_bytes = 0
        self.budget = budget
        self.closing = False
        self.last_sent = time.monotonic()

    def send(self, frame: bytes, key: str | None = None) -> bool:
        """Write ``frame`` now, or queue it (conflated under ``key`` when given).

        False when the socket is lagging beyond its budget: the caller closes it.
        """
        if self.closing:
            return True
        if self.lagging_since is None:
            transport = self.transport
            if transport.get_write_buffer_size() <= HIGH_WATER:
                write(transport, frame)
                return True
            self.lagging_since = time.monotonic()
            self.laggards.add(self)
        if key is None:
            self.queue.append(frame)
        else:
            previous = self.conflated.pop(key, None)
            if previous is not None:
                self.pending_bytes -= len(previous)
                WS_CONFLATIONS.inc()
            self.conflated[key] = frame
        self.pending_bytes += len(frame)
        return self.pending_bytes <= self.budget

    def flush(self) -> bool:
        """Hand the queue to a drained transport; True once the socket keeps up again."""
        if self.lagging_since is None:
            return True
        transport = self.transport
        if transport.is_closing():
            return False
        if transport.get_write_buffer_size() > LOW_WATER:
            return False
        frames = list(self.queue)
        frames.extend(self.conflated.values())
        self.queue.clear()
        self.conflated.clear()
        self.pending_bytes = 0
        self.lagging_since = None
        write(transport, b"".join(frames))
        self.last_sent = time.monotonic()
        return True

    def reply(self, frame: bytes) -> bool:
        """A frame for this socket alone (ack, error, snapshot...): it also counts as traffic."""
        self.last_sent = time.monotonic()
        return self.send(frame)

    def stop_sending(self) -> None:
        """Mark the socket closing and drop what is queued for it."""
        self.closing = True
        self.queue.clear()
        self.conflated.clear()
        self.pending_bytes = 0

    def close(self, code: int, reason: str) -> None:
        """Send a close frame (after anything already in the transport) and drop the queue,
        at once: no waiting for the client's answer."""
        if self.closing:
            return
        if code == 1013:
            WS_SLOW_CLOSES.inc()
        self.stop_sending()
        close_now(self.ws, code, reason)
