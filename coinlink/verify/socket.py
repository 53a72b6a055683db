"""A small client of CoinLink's ``/ws`` protocol: ops with ids, messages picked by match."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

Message = dict[str, Any]
OPEN_TIMEOUT_S = 10


def ws_url(base_url: str) -> str:
    scheme, rest = base_url.rstrip("/").split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws"


class Socket:
    """Keeps what arrives (heartbeats aside) so that a reply can be picked out of order;
    the caller's deadline bounds every wait."""

    def __init__(self, base_url: str) -> None:
        self._url = ws_url(base_url)
        self._conn: ClientConnection | None = None
        self._ids = itertools.count(1)
        self.received: list[Message] = []

    async def __aenter__(self) -> Socket:
        self._conn = await connect(self._url, compression=None, open_timeout=OPEN_TIMEOUT_S)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def send(self, op: str, **fields: Any) -> int:
        msg_id = next(self._ids)
        assert self._conn is not None, "use the socket in an async with"
        await self._conn.send(json.dumps({"op": op, "id": msg_id, **fields}))
        return msg_id

    async def request(self, op: str, **fields: Any) -> Message:
        """Send an op; its reply (ack, pong or error with the same id)."""
        msg_id = await self.send(op, **fields)
        return await self.next(lambda m: m.get("id") == msg_id and m["type"] != "update")

    async def next(self, match: Callable[[Message], bool]) -> Message:
        """The first message ``match`` accepts, taken out of what arrived."""
        assert self._conn is not None, "use the socket in an async with"
        while True:
            for index, message in enumerate(self.received):
                if match(message):
                    return self.received.pop(index)
            message = json.loads(await self._conn.recv())
            if message.get("type") != "heartbeat":
                self.received.append(message)
