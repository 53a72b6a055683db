"""Any frames a client may send to /ws, on a real server: the socket answers and stays
usable, or closes with a protocol close code and a reason; never an error-level log line,
never a cut without a close frame."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import log_guard
from tests.support.apps import ServerProcess, instance_env
from tests.support.ws import CLOSE, TEXT, RawReader, close_code, masked, masked_text, raw_handshake

pytestmark = pytest.mark.timeout(300)

LAST_ID = 424_242  # the ping sent after the fuzzed frames
DATA = {0x0, 0x1, 0x2}  # continuation, text, binary
# What a server may close a misbehaving client with: protocol error, unsupported or
# invalid data, policy (the inbound limit), too big.
PROTOCOL_CLOSES = {1002, 1003, 1007, 1008, 1009}


@pytest.fixture(scope="module")
def server(module_pg_url: str, redis_url: str) -> Iterator[ServerProcess]:
    env = instance_env(module_pg_url, redis_url, symbols="BTC-USD,ETH-USD")
    process = ServerProcess(env).wait_ready()
    try:
        yield process
    finally:
        process.stop()


def frame(opcode: int, payload: bytes, fin: bool, rsv: int, mask: bool) -> bytes:
    """A client frame of any shape, also the ones RFC 6455 forbids (unmasked, RSV bits,
    reserved opcodes, fragmented or long control frames)."""
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    encoded = masked_text(payload)  # 0x81, the length with the mask bit, zero mask, payload
    length = encoded[1 : len(encoded) - len(payload) - 4]
    if mask:
        return bytes((first,)) + length + b"\x00\x00\x00\x00" + payload
    return bytes((first, length[0] & 0x7F)) + length[1:] + payload


def dumps(value: Any) -> bytes:
    """JSON as any client may write it (integers of any size, ``Infinity``)."""
    return json.dumps(value).encode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
messages = st.fixed_dictionaries(
    {"op": st.sampled_from(["auth", "subscribe", "unsubscribe", "ping", "Ping", "x"])},
    optional={
        "id": st.integers(-2, 2**54) | json_values,
        "channels": st.lists(
            st.sampled_from(["tickers", "ticker:btc-usd", "candles:ETH-USD:1m", "x", ""])
            | st.text(),
            max_size=3,
        )
        | json_values,
        "since": st.dictionaries(st.text(), st.integers(-1, 10**20)) | json_values,
        "token": st.text(),
        "extra": json_values,
    },
)
payloads = (
    messages.map(dumps)
    | st.binary(max_size=300)
    | st.text(max_size=100).map(str.encode)
    | json_values.map(dumps)
)
Fields = tuple[int, bytes, bool, int, bool]  # frame()'s arguments
frames = st.tuples(
    st.sampled_from([0x0, 0x1, 0x1, 0x1, 0x2, 0x3, 0x8, 0x9, 0xA, 0xB]),  # opcode
    payloads,
    st.booleans() | st.just(True),  # fin
    st.sampled_from([0, 0, 0, 0, 1, 4]),  # rsv
    st.booleans() | st.just(True),  # mask
)


def replied(frames_read: list[tuple[int, bytes]]) -> bool:
    """The answer to the last ping, or a close frame."""
    for opcode, payload in frames_read:
        if opcode == CLOSE:
            return True
        if opcode == TEXT and orjson.loads(payload).get("id") == LAST_ID:
            return True
    return False


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sent=st.lists(frames, min_size=1, max_size=8))
def test_any_frames_get_answers_or_a_protocol_close(
    server: ServerProcess, sent: list[Fields]
) -> None:
    # The client's own close frames: the server may echo one (RFC 6455, 5.5.1).
    closes = {fields[1] for fields in sent if fields[0] == CLOSE}
    sock = raw_handshake(server.port, rcvbuf=1 << 20)
    try:
        last = masked_text(orjson.dumps({"op": "ping", "id": LAST_ID}))
        sock.sendall(b"".join(frame(*fields) for fields in sent) + last)
        got = RawReader(sock, own_closes=closes).read_until(replied, 15)
        code = close_code(got)
        if code is not None:
            [close] = [payload for opcode, payload in got if opcode == CLOSE]
            if close not in closes:
                assert code in PROTOCOL_CLOSES, got
                assert close[2:], "a close without a reason"
            sock.sendall(masked(CLOSE, close))
        else:  # no close: every message the client completed got one answer, in order
            answers = [orjson.loads(payload) for opcode, payload in got if opcode == TEXT]
            replies = [m for m in answers if m["type"] in {"pong", "ack", "error"}]
            completed = [fields for fields in sent if fields[2] and fields[0] in DATA]
            assert len(replies) == len(completed) + 1, (answers, sent)
            assert replies[-1]["id"] == LAST_ID
    finally:
        sock.close()
    assert not log_guard.unexpected(server.output())
