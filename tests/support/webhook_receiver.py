"""A real HTTP/1.1 webhook receiver on 127.0.0.1 whose behaviour each test decides."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


Respond = Callable[[Received, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Receiver:
    respond: Respond
    connections: int = 0
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)  # type: ignore[arg-type]
        try:
            while True:  # keep-alive: one connection may carry several requests
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
                method, target, _ = request_line.split(" ")
                headers = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                received = Received(method, target, headers, body)
                self.requests.append(received)
                await self.respond(received, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            # Only the receiver's own shutdown cancels a handler. Ending normally keeps
            # asyncio's stream callback from logging the cancellation as an error.
            pass
        finally:
            writer.close()


def answer(status: int, body: bytes = b"", extra: str = "") -> Respond:
    async def respond(received: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body
        )
        await writer.drain()

    return respond


@contextlib.asynccontextmanager
async def receiver(
    respond: Respond, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Receiver]:
    rcv = Receiver(respond)
    server = await asyncio.start_server(rcv.handle, "127.0.0.1", 0, ssl=ssl_context)
    rcv.port = server.sockets[0].getsockname()[1]
    try:
        yield rcv
    finally:
        server.close()
        for task in rcv.handlers:  # a silent or flooding handler would outlive the test
            task.cancel()
        await asyncio.gather(*rcv.handlers, return_exceptions=True)
