"""What one client sends on ``/ws``: each frame checked as websockets parses it, before
anything else sees it, and the complete messages queued for the session.

* Every frame but the close counts against the socket's token bucket (``burst`` at once,
  ``rate`` a second): text, binary, continuation, ping and pong alike. Past it the socket
  is closed with 1008.
* A text message that is not UTF-8 closes the socket with 1007; nothing of it is logged
  or processed.
* Complete messages wait in the socket's own queue; while it holds :data:`PAUSE_AT` of
  them the transport stops reading (the client's sends back up in the kernel).
* From a refused frame on, every frame but the close is dropped unseen; the session
  answers the messages that came before, then closes (:meth:`Inbound.closed`). The close
  is a handshake: the server goes on reading, and dropping, until the client's own close
  frame (at most :data:`CLOSE_WAIT_S`). A connection closed with bytes unread is reset by
  the kernel, and a client busy sending might never read the close frame that says why.
* Between the refused frame and the close frame the socket does not read, and after it
  it drops at a pace (one read every :data:`DROP_PACE_S`). A websockets client yields to
  its reader only while a send waits: a server that dropped as fast as a flooder sends
  would keep its sends flowing, and it would not read the close frame until the
  connection was reset.

Sanic would otherwise decode text frames in a task per chunk of bytes: invalid UTF-8
failed that task (logged at error level by asyncio, the frame included) and the message
vanished without an answer; and every chunk that arrived after the session stopped
reading left a task pending forever.
"""

from __future__ import annotations

import asyncio
import codecs
import math
import time
from collections.abc import Callable

from sanic import Websocket
from websockets.frames import Frame, Opcode

from coinlink.realtime.transport import intercept, send_close, transport_of, wait_closed

PAUSE_AT = 8
"""Messages queued for the session before the socket stops reading."""
CLOSE_WAIT_S = 2.0
"""How long a client has to answer the server's close frame."""
DROP_PACE_S = 0.005
"""Between two reads of a closing socket (one read is at most 256 KiB: about 50 MB/s,
slower than a flooder sends, and a backlog of the kernel's buffers gone in a fifth of
:data:`CLOSE_WAIT_S`)."""

Refuse = Callable[[int], bool]
"""Told that the socket is about to close with this code; False if it is closing already."""


class TokenBucket:
    """``burst`` at once, then ``rate`` a second."""

    __slots__ = ("allowance", "at", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        # A new socket starts with its full burst (the first take clamps this to it):
        # counting from the monotonic clock's origin, an arbitrary point such as the
        # machine's boot, a freshly booted host with a low rate refused first messages.
        self.allowance = math.inf
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.allowance = min(self.burst, self.allowance + (now - self.at) * self.rate)
        self.at = now
        if self.allowance < 1.0:
            return False
        self.allowance -= 1.0
        return True


class Inbound:
    """One socket's inbound side: :meth:`next` gives the session each client message."""

    def __init__(self, ws: Websocket, bucket: TokenBucket) -> None:
        """Call it before the loop reads from the socket (see :func:`intercept`)."""
        self.ws = ws
        self.bucket = bucket
        self.closing = False  # frames are dropped from here on
        self.refusal: tuple[int, str] | None = None  # the close code and reason due
        self.queue: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._paused = False
        self._draining = False  # the close frame is out: drop at a pace, until the answer
        self._pacing: asyncio.TimerHandle | None = None  # the next paced read
        self._parts: list[str] | list[bytes] = []  # of a fragmented message
        self._decoder: codecs.IncrementalDecoder | None = None  # of a text message
        intercept(ws, self)

    async def next(self) -> str | bytes | None:
        """The next message (``str`` from text frames, ``bytes`` from binary ones); None
        once the client has closed or a frame was refused."""
        message = await self.queue.get()
        if self._paused and not self.closing and self.queue.qsize() < PAUSE_AT // 2:
            self._reading(True)
        return message

    async def closed(self, refuse: Refuse) -> None:
        """After :meth:`next` gave None: close as a refused frame asks (told to ``refuse``
        first), and wait for the client's answer (or its time)."""
        if self.refusal is None:
            return
        code, reason = self.refusal
        closing = refuse(code) and send_close(self.ws, code, reason)
        self._draining = closing
        self._reading(True)  # now drop what the client sends, until its close frame
        if closing:
            try:
                await wait_closed(self.ws, CLOSE_WAIT_S)
            finally:
                self._end_draining()

    # -- frames, as websockets parses them (synchronous) ----------------------------------

    def admit(self, frame: Frame) -> bool:
        if frame.opcode is Opcode.CLOSE:  # the client leaves: nothing it sent needs an answer
            self.refusal = None
            self._stop()
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)
            return True
        if self.closing:
            if self._draining and not self._paused:
                self._pace()
            return False
        if not self.bucket.take():
            self._refuse(1008, "too many messages")
            return False
        return True

    def take(self, frame: Frame) -> None:
        if frame.opcode is not Opcode.CONT:  # a message starts
            text = frame.opcode is Opcode.TEXT
            self._decoder = codecs.getincrementaldecoder("utf-8")() if text else None
        if self._decoder is None:
            self._parts.append(frame.data)  # type: ignore[arg-type]
        else:
            try:
                self._parts.append(self._decoder.decode(frame.data, frame.fin))  # type: ignore[arg-type]
            except UnicodeDecodeError:
                self._refuse(1007, "text messages must be UTF-8")
                return
        if frame.fin:
            parts, self._parts = self._parts, []
            message = "".join(parts) if self._decoder else b"".join(parts)  # type: ignore[arg-type]
            self.queue.put_nowait(message)
            if self.queue.qsize() >= PAUSE_AT and not self._paused:
                self._reading(False)

    def _refuse(self, code: int, reason: str) -> None:
        self.refusal = (code, reason)
        self.closing = True
        self._parts = []
        if not self._paused:  # until the close frame is out (see the module's docstring)
            self._reading(False)
        self.queue.put_nowait(None)  # after the messages that came before

    def _pace(self) -> None:
        """Read no more until the pace allows (the rest of this read is still parsed)."""
        self._reading(False)
        self._pacing = asyncio.get_running_loop().call_later(DROP_PACE_S, self._paced_read)

    def _paced_read(self) -> None:
        self._pacing = None
        self._reading(True)

    def _end_draining(self) -> None:
        """No more pace: reading goes on for whatever closes the socket next."""
        self._draining = False
        if self._pacing is not None:
            self._pacing.cancel()
            self._pacing = None
            self._reading(True)

    def _stop(self) -> None:
        self._end_draining()
        self.closing = True
        self._parts = []
        if self._paused:  # the client's close is answered by Sanic, which must read on
            self._reading(True)

    def _reading(self, on: bool) -> None:
        self._paused = not on
        transport = transport_of(self.ws)
        if transport.is_closing():
            return
        if on:
            transport.resume_reading()
        else:
            transport.pause_reading()
