"""docs/api.md's WebSocket sessions hold: each complete client line (``>``) parses as the
server parses messages (or is answered with the very error the server gives), each
complete server line (``<``) is a frame of the AsyncAPI document. Lines abbreviated with
``...`` are only for reading."""

from __future__ import annotations

from pathlib import Path

import orjson

from coinlink.realtime import protocol
from tests.support.asyncapi import check_frame

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_the_documented_sessions_are_real_messages_and_frames() -> None:
    lines = [line for line in API_MD.read_text().splitlines() if line[:2] in ("> ", "< ")]
    complete = [line for line in lines if "..." not in line]
    assert len(complete) >= 20, "the WebSocket examples went missing from docs/api.md"
    for line, after in zip(complete, [*complete[1:], ""], strict=True):
        if line.startswith("<"):
            check_frame(orjson.loads(line[2:]))
            continue
        try:
            protocol.parse(line[2:])
        except protocol.ProtocolError as refused:
            reply = {"type": "error", "id": refused.msg_id, "code": refused.code}
            assert after[2:] and orjson.loads(after[2:]) == {**reply, "message": refused.message}
