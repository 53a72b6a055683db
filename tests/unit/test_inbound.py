"""The inbound side of a socket: the token bucket, and the pace of a closing socket's reads."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from websockets.frames import Frame, Opcode
from websockets.protocol import State

from coinlink.realtime import inbound
from coinlink.realtime.inbound import Inbound, TokenBucket


def test_frames_are_allowed_up_to_the_burst_then_at_the_rate() -> None:
    bucket = TokenBucket(0.001, 3)  # a token every 1000 s: none comes back during the test
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    # A long quiet spell (at this rate, any pause) refills the bucket to the burst, no more.
    bucket.rate = 1e9
    assert bucket.take()
    bucket.rate = 0.001
    assert [bucket.take() for _ in range(3)] == [True, True, False]


class Transport:
    """Where the socket's reading is switched on and off."""

    def __init__(self) -> None:
        self.reading = True
        self.resumed = asyncio.Event()

    def pause_reading(self) -> None:
        self.reading = False
        self.resumed.clear()

    def resume_reading(self) -> None:
        self.reading = True
        self.resumed.set()

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        pass


class Protocol:
    """The parts of websockets' ServerProtocol that the inbound side and a close use."""

    def __init__(self) -> None:
        self.state = State.OPEN
        self.events: list[Frame] = []
        self.closes: list[tuple[int, str]] = []

    def recv_frame(self, frame: Frame) -> None:
        self.events.append(frame)

    def send_close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))
        self.state = State.CLOSING

    def data_to_send(self) -> list[bytes]:
        return []


def text(data: bytes = b'{"op": "ping", "id": 1}') -> Frame:
    return Frame(Opcode.TEXT, data)


async def test_a_closing_socket_drops_what_its_client_sends_at_a_pace() -> None:
    """After the close frame, one read per pace: a flooder's sends back up (so it reads the
    close frame); the client's own close ends the pace."""
    transport, proto = Transport(), Protocol()
    lost = asyncio.Event()

    async def wait_for_connection_lost(timeout: float) -> bool:
        await lost.wait()
        return True

    ws: Any = SimpleNamespace(
        ws_proto=proto,
        io_proto=SimpleNamespace(transport=transport),
        wait_for_connection_lost=wait_for_connection_lost,
    )
    side = Inbound(ws, TokenBucket(0.001, 1))
    proto.recv_frame(text())  # the burst
    proto.recv_frame(text())  # refused: 1008 due, reading stops until the close frame
    assert not transport.reading
    assert await side.next() == '{"op": "ping", "id": 1}'
    assert await side.next() is None
    closing = asyncio.create_task(side.closed(lambda code: True))
    await asyncio.sleep(0)
    assert proto.closes == [(1008, "too many messages")] and transport.reading

    proto.recv_frame(text())  # dropped, and nothing more is read for a while
    assert not transport.reading and not proto.events
    paused_at = asyncio.get_running_loop().time()
    async with asyncio.timeout(1):
        await transport.resumed.wait()
    assert asyncio.get_running_loop().time() - paused_at >= inbound.DROP_PACE_S * 0.9
    proto.recv_frame(text())
    assert not transport.reading

    proto.recv_frame(Frame(Opcode.CLOSE, b"\x03\xf0"))  # the answer: read on, for Sanic
    assert transport.reading and [f.opcode for f in proto.events] == [Opcode.CLOSE]
    lost.set()
    await closing
    assert transport.reading
