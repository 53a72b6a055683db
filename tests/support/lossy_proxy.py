"""A TCP proxy in front of ``/ws`` that loses the server frames a test picks: a lossy
network between a real client and a real server, for gap detection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import orjson

from tests.support.ws import TEXT, split_frames

Json = dict[str, Any]


def unmasked(opcode: int, payload: bytes) -> bytes:
    """A server-to-client frame (servers do not mask), final."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, size))
    elif size < 65536:
        header = bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big")
    return header + payload


class LossyProxy:
    """Forwards everything both ways, except the server's text frames ``lose`` accepts,
    which are dropped (and kept in ``lost``)."""

    def __init__(self, port: int, lose: Callable[[Json], bool]) -> None:
        self.target = port
        self.lose = lose
        self.lost: list[Json] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> LossyProxy:
        self._server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/ws"

    async def _connected(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target)
        pumps = [
            asyncio.create_task(self._pump(client_r, server_w)),
            asyncio.create_task(self._filter(server_r, client_w)),
        ]
        self._tasks.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)
        for writer in (client_w, server_w):
            writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    async def _filter(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readuntil(b"\r\n\r\n"))  # the 101 response's head
        rest = b""
        while data := await reader.read(65536):
            frames, rest = split_frames(rest + data)
            for opcode, payload in frames:
                if opcode == TEXT and self.lose(message := orjson.loads(payload)):
                    self.lost.append(message)
                    continue
                writer.write(unmasked(opcode, payload))
            await writer.drain()
        writer.close()
