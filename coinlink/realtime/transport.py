"""A Sanic WebSocket below Sanic's API: frames written straight into its transport, and
the frames its client sends taken before Sanic's assembler sees them.

Relies on internals of Sanic 25.12 and websockets 17.4:

* ``Websocket.io_proto.transport``: the asyncio transport under Sanic's WebSocket;
  frames go to its ``write`` (public asyncio API from there on) without awaiting;
* ``Websocket.end_connection(code, reason)``: Sanic's close that sends the close frame
  (after whatever is already in the transport) without awaiting the client's answer;
* Sanic accepts upgrades with a bare ``websockets.ServerProtocol``: no extension (no
  permessage-deflate) is ever negotiated, so an unmasked RFC 6455 text frame built once
  (:func:`text_frame`) is valid, byte for byte, on every socket;
* ``Websocket.ws_proto``, that ``ServerProtocol``: its parser hands each frame to
  ``recv_frame`` (looked up on the instance, so :func:`intercept` can stand in front of
  it), which appends it to ``events``, the list Sanic's ``data_received`` takes next;
  ``send_close`` and ``data_to_send`` send a close frame; ``Websocket.wait_for_connection_lost``
  waits for the TCP connection's end.

Why: the hub writes one ``bytes`` object to every subscribed socket in a plain loop with
nothing awaited and no task per client; ``await ws.send()`` per socket lets one slow
client stall all, and a queue plus writer task per socket costs more than twice the CPU
(``docs/architecture.md``, "The WebSocket hub"; ``docs/performance.md``, "WebSocket
fan-out": cheaper per delivery than websockets' own ``broadcast()``).
``tests/unit/test_realtime_transport.py`` fails when an upgrade breaks what this relies on.
"""

from __future__ import annotations

from asyncio import Transport
from typing import Protocol

from sanic import Websocket
from websockets.frames import Frame, Opcode
from websockets.protocol import State

CHECKED_VERSIONS = {"sanic": ">=25.12,<26", "websockets": ">=17.4,<18"}
"""The releases this module was checked against; a test fails outside them."""


def text_frame(payload: bytes) -> bytes:
    """An unfragmented, unmasked text frame (RFC 6455 section 5.2) holding ``payload``."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 65536:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return header + payload


def transport_of(ws: Websocket) -> Transport:
    """The transport under an upgraded socket, for :func:`text_frame` bytes to be written to."""
    transport: Transport = ws.io_proto.transport  # type: ignore[union-attr, assignment]
    return transport


def write(transport: Transport, data: bytes) -> None:
    """Write ``data`` unless the socket's sending side is done: closing, or past the close
    handshake (Sanic then wrote EOF, which ``is_closing()`` does not report)."""
    if transport.is_closing():
        return
    # try/except, not contextlib.suppress: this runs once per delivery in the fan-out, and
    # a try costs nothing until it catches.
    try:
        transport.write(data)
    except RuntimeError:  # write() after write_eof(): nothing more may be sent
        return


def close_now(ws: Websocket, code: int, reason: str) -> None:
    """Send the close frame after what the transport already holds, and stop reading."""
    ws.end_connection(code, reason)  # type: ignore[no-untyped-call]


DATA_OPCODES = frozenset((Opcode.TEXT, Opcode.BINARY, Opcode.CONT))


class FrameTaker(Protocol):
    def admit(self, frame: Frame) -> bool:
        """Whether websockets may see ``frame`` (False: it is dropped unseen)."""

    def take(self, frame: Frame) -> None:
        """A data frame websockets has accepted (fragments in order, sizes in bounds)."""


def intercept(ws: Websocket, taker: FrameTaker) -> None:
    """Show ``taker`` every frame the client sends, as websockets parses it.

    Data frames go to ``taker`` alone: Sanic's assembler never sees them (it decodes in a
    task of its own, where an error is lost to the client and logged with the frame).
    Control frames go on to Sanic (a ping's pong, the keepalive's pongs, the close).
    Call it in the same step of the event loop as the handshake's 101 response (Sanic's
    ``websocket.handler.before`` signal): from the next, the loop may read frames.
    """
    proto = ws.ws_proto
    recv_frame = proto.recv_frame

    def guarded(frame: Frame) -> None:
        if not taker.admit(frame):
            return
        recv_frame(frame)  # websockets' checks and bookkeeping
        if frame.opcode in DATA_OPCODES:
            proto.events.pop()  # the frame it just queued for Sanic
            taker.take(frame)

    proto.recv_frame = guarded  # type: ignore[method-assign]


def send_close(ws: Websocket, code: int, reason: str) -> bool:
    """Send a close frame (after what the transport holds) and go on reading, for the
    client's answer; False when the socket is closing already."""
    proto = ws.ws_proto
    if proto.state is not State.OPEN:
        return False
    proto.send_close(code, reason)
    transport = transport_of(ws)
    for data in proto.data_to_send():
        write(transport, data)
    return True


async def wait_closed(ws: Websocket, within_s: float) -> bool:
    """Wait for the TCP connection's end, at most ``within_s``; whether it ended."""
    closed: bool = await ws.wait_for_connection_lost(within_s)
    return closed
