"""Real WebSocket pairs inside the test's own event loop, for the hub and its connections.

The server end is the socket Sanic hands a WebSocket route (what the hub gets in
production: Sanic's protocol over a real asyncio transport); the client end is a plain TCP
socket that the test reads only when it chooses, through the ``websockets`` library's
client protocol (the real frame parser, no I/O of its own). A client that does not read is
what makes the server's writes back up; both ends' kernel buffers are made small, so a few
tens of KiB already wait in the server's transport buffer, as behind a slow client on a
real network, only sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from sanic import Request, Sanic
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from tests.support.services import free_port, until

KERNEL_BUFFER = 4096
"""SO_SNDBUF of the server end and SO_RCVBUF of the client end."""

READ_TIMEOUT_S = 5.0


class Peer:
    """The client end of one WebSocket: nothing reads it until the test does."""

    def __init__(self, sock: socket.socket, port: int) -> None:
        self.sock = sock
        self.protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws"), max_size=None)
        self.frames: list[Frame] = []  # received and not yet taken
        self.eof = False

    async def handshake(self) -> None:
        self.protocol.send_request(self.protocol.connect())
        await self._send_pending()
        while self.protocol.state is not State.OPEN:
            if self.protocol.handshake_exc is not None:
                raise self.protocol.handshake_exc
            await self._read()

    async def _send_pending(self) -> None:
        loop = asyncio.get_running_loop()
        for chunk in self.protocol.data_to_send():
            if chunk and not self.eof:  # b"" asks for a half-close: not needed here
                with contextlib.suppress(ConnectionError):
                    await loop.sock_sendall(self.sock, chunk)

    async def read_some(self, limit: int) -> None:
        """Take at most ``limit`` bytes off the socket (what arrives is parsed and kept)."""
        await self._read(limit)

    async def _read(self, limit: int = 1 << 16) -> None:
        if self.eof:
            raise ConnectionError("the server closed the connection")
        data = await asyncio.get_running_loop().sock_recv(self.sock, limit)
        if data:
            self.protocol.receive_data(data)
        else:
            self.eof = True
            self.protocol.receive_eof()
        for event in self.protocol.events_received():
            if isinstance(event, Frame):
                self.frames.append(event)
            elif not isinstance(event, Response):  # pragma: no cover - nothing else exists
                raise AssertionError(f"unexpected event {event!r}")
        await self._send_pending()  # the answer to a close frame, as a real client sends

    async def frame(self, timeout: float = READ_TIMEOUT_S) -> Frame:
        """The next frame the server sent."""
        async with asyncio.timeout(timeout):
            while not self.frames:
                await self._read()
        return self.frames.pop(0)

    async def message(self, timeout: float = READ_TIMEOUT_S) -> Any:
        """The next text message, decoded; a close frame instead is an error."""
        frame = await self.frame(timeout)
        if frame.opcode is not Opcode.TEXT:
            raise AssertionError(f"expected a text message, got {frame}")
        return orjson.loads(frame.data)

    async def messages(self, count: int, timeout: float = READ_TIMEOUT_S) -> list[Any]:
        return [await self.message(timeout) for _ in range(count)]

    async def closed(self, timeout: float = READ_TIMEOUT_S) -> tuple[int, str, list[Any]]:
        """Read up to the server's close frame: its code, its reason, the messages before it."""
        before = []
        while True:
            frame = await self.frame(timeout)
            if frame.opcode is Opcode.CLOSE:
                close = Close.parse(frame.data)
                return close.code, close.reason, before
            before.append(orjson.loads(frame.data))

    def close(self) -> None:
        self.sock.close()


class WsEndpoint:
    """``/ws`` on a real Sanic server; :meth:`open` gives the test both ends of a socket."""

    def __init__(self) -> None:
        self.port = free_port()
        self.app: Sanic[Any, Any] = Sanic(
            f"ws_pairs_{uuid.uuid4().hex[:8]}", configure_logging=False
        )
        # Several servers in one process (TOUCHUP rewrites Sanic's methods once only); no
        # sanic-ext; no keepalive pings: this WebSocket is driven by the test alone.
        self.app.config.update(TOUCHUP=False, AUTO_EXTEND=False, WEBSOCKET_PING_INTERVAL=None)
        self.app.add_websocket_route(self._handler, "/ws")
        self._handed: asyncio.Queue[Any] = asyncio.Queue()
        self._release = asyncio.Event()
        self._peers: list[Peer] = []

    async def _handler(self, request: Request, ws: Any) -> None:
        transport = ws.io_proto.transport
        transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_BUFFER
        )
        self._handed.put_nowait(ws)
        await self._release.wait()  # the socket lives as long as the test needs it

    async def open(self) -> tuple[Any, Peer]:
        """A freshly upgraded socket: Sanic's server end, and the client end."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, KERNEL_BUFFER)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
        peer = Peer(sock, self.port)
        self._peers.append(peer)
        async with asyncio.timeout(READ_TIMEOUT_S):
            await peer.handshake()
            return await self._handed.get(), peer


@contextlib.asynccontextmanager
async def ws_endpoint() -> AsyncIterator[WsEndpoint]:
    endpoint = WsEndpoint()
    server = await endpoint.app.create_server(
        host="127.0.0.1", port=endpoint.port, return_asyncio_server=True, access_log=False
    )
    assert server is not None
    await server.startup()
    await server.start_serving()
    try:
        yield endpoint
    finally:
        for peer in endpoint._peers:
            peer.close()
        endpoint._release.set()
        await until(lambda: not endpoint.app.websocket_tasks, what="the handlers returning")
        server.close()
        await server.wait_closed()
