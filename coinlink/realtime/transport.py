"""Frames written straight into a Sanic WebSocket's transport, past Sanic's own writer.

Relies on internals of Sanic 25.12 and websockets 17.4:

* ``Websocket.io_proto.transport``: the asyncio transport under Sanic's WebSocket;
  frames go to its ``write`` (public asyncio API from there on) without awaiting;
* ``Websocket.end_connection(code, reason)``: Sanic's close that sends the close frame
  (after whatever is already in the transport) without awaiting the client's answer;
* Sanic accepts upgrades with a bare ``websockets.ServerProtocol``: no extension (no
  permessage-deflate) is ever negotiated, so an unmasked RFC 6455 text frame built once
  (:func:`text_frame`) is valid, byte for byte, on every socket.

Why: the hub writes one ``bytes`` object to every subscribed socket in a plain loop with
nothing awaited and no task per client; ``await ws.send()`` per socket lets one slow
client stall all, and a queue plus writer task per socket costs more than twice the CPU
(``docs/architecture.md``, "The WebSocket hub"; ``docs/performance.md``, "WebSocket
fan-out": cheaper per delivery than websockets' own ``broadcast()``).
``tests/unit/test_realtime_transport.py`` fails when an upgrade breaks what this relies on.
"""

from __future__ import annotations

from asyncio import Transport

from sanic import Websocket

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
