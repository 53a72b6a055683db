"""The WebSocket transport adapter (``coinlink.realtime.transport``) against a real Sanic server.

Frames written through the adapter must reach a client byte for byte, be what the
``websockets`` library reads (with compression offered, as browsers do), and Sanic's close
must follow them. If one of these fails after a Sanic or websockets upgrade, the adapter
relies on something that changed: read its docstring, compare, adapt.
"""

from __future__ import annotations

import asyncio
import contextlib
from asyncio import Transport
from collections.abc import Callable

import pytest
from sanic import Request, Websocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode
from websockets.server import ServerProtocol

from coinlink.realtime import transport
from tests.support.adapters import check_signature, check_versions
from tests.support.in_process import bare_app, serving
from tests.support.services import eventually
from tests.support.ws import parse_frame, raw_upgrade

# Every length encoding of RFC 6455: 7-bit, 16-bit and 64-bit, each at its edges.
SIZES = [0, 1, 125, 126, 65535, 65536, 200_000]


def test_sanic_and_websockets_are_versions_the_adapter_was_checked_against() -> None:
    check_versions(transport)


def test_sanics_immediate_close_still_takes_a_code_and_a_reason() -> None:
    check_signature(transport, Websocket.end_connection, "(self, code=1000, reason='')")


@pytest.mark.parametrize(
    ("internal", "expected"),
    [
        (ServerProtocol.recv_frame, "(self, frame: websockets.frames.Frame) -> None"),
        (
            ServerProtocol.send_close,
            "(self, code: websockets.frames.CloseCode | int | None = None, reason: str = '')"
            " -> None",
        ),
        (ServerProtocol.data_to_send, "(self) -> list[bytes]"),
        (Websocket.wait_for_connection_lost, "(self, timeout=None) -> bool"),
    ],
)
def test_what_taking_the_clients_frames_relies_on_still_takes_what_it_did(
    internal: Callable[..., object], expected: str
) -> None:
    check_signature(transport, internal, expected)


@pytest.mark.parametrize("size", SIZES)
def test_text_frames_are_what_the_websockets_parser_reads(size: int) -> None:
    payload = b"x" * size
    frame = parse_frame(transport.text_frame(payload))
    assert frame.opcode is Opcode.TEXT and frame.fin and frame.data == payload


async def until_closed(ws: Websocket) -> None:
    """Read (and drop) what the client sends until the connection ends."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await ws.recv()


async def test_frames_written_to_the_transport_arrive_byte_exact() -> None:
    app = bare_app()
    frames = [transport.text_frame(b"%d" % size + b"x" * size) for size in SIZES]
    transports: list[Transport] = []

    @app.websocket("/ws")
    async def write_frames(request: Request, ws: Websocket) -> None:
        writer = transport.transport_of(ws)
        transports.append(writer)
        for frame in frames:
            writer.write(frame)
        await until_closed(ws)

    async with serving(app) as port:
        reader, writer, _ = await raw_upgrade(port)
        async with asyncio.timeout(5):
            received = await reader.readexactly(sum(map(len, frames)))
        assert received == b"".join(frames), (
            "coinlink.realtime.transport: frames written to Sanic's transport arrived altered"
        )
        assert not transports[0].is_closing()

        writer.close()  # the client goes away: the transport must say so, or writes go on
        await eventually(transports[0].is_closing, 5, "the transport reporting the close")


async def test_a_client_offering_compression_reads_the_frames_then_the_close() -> None:
    app = bare_app()
    transports: list[Transport] = []

    @app.websocket("/ws")
    async def write_then_close(request: Request, ws: Websocket) -> None:
        writer = transport.transport_of(ws)
        transports.append(writer)
        writer.write(transport.text_frame(b'{"n":1}'))
        writer.write(transport.text_frame("caf\u00e9".encode()))
        transport.close_now(ws, 1013, "too slow to keep up")
        await until_closed(ws)

    async with serving(app) as port, connect(f"ws://127.0.0.1:{port}/ws") as client:
        assert client.response is not None
        # A frame built once is valid on every socket only while Sanic negotiates nothing.
        assert "Sec-WebSocket-Extensions" not in client.response.headers, (
            "coinlink.realtime.transport: Sanic now negotiates a WebSocket extension; "
            "pre-built frames may no longer be valid on every socket"
        )
        async with asyncio.timeout(5):
            assert await client.recv() == '{"n":1}'
            assert await client.recv() == "caf\u00e9"
            with pytest.raises(ConnectionClosed) as closed:
                await client.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1013, "too slow to keep up")
        await eventually(transports[0].is_closing, 5, "the transport closing after close_now")


async def test_writing_after_the_close_handshake_sends_nothing_and_raises_nothing() -> None:
    # What Sanic leaves once a close handshake is over: EOF written, the transport open.
    received: asyncio.Queue[bytes] = asyncio.Queue()

    class Keep(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            received.put_nowait(data)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Keep, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sent, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    try:
        transport.write(sent, b"before")
        assert await received.get() == b"before"
        sent.write_eof()
        assert not sent.is_closing()
        transport.write(sent, b"after")  # Transport.write would raise RuntimeError here
    finally:
        sent.close()
        server.close()
        await server.wait_closed()
    assert received.empty()
