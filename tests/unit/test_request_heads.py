"""What the head check refuses, case by case (the answers themselves: on a real server in
tests/integration/test_request_heads.py)."""

from __future__ import annotations

import pytest
from sanic.compat import Header

from coinlink.serving import request_heads
from coinlink.serving.request_heads import fields_problem, head_problem, why_refused


@pytest.mark.parametrize(
    ("buffer", "problem"),
    [
        (b"", None),
        (b"GET /health HTTP/1.1\r", None),  # its LF may come next
        (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", None),
        (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nbody\nwith\rany bytes", None),
        (b"GET /health HTTP/1.1\n", request_heads.LINE_ENDINGS),
        (b"GET /health\r\n", request_heads.REQUEST_LINE),
        (b"GET /health HTTP/2.0\r\n", request_heads.VERSION),
        (b"\x16\x03\x01\x02\x00", request_heads.TLS_ON_PLAIN_PORT),
    ],
)
def test_head_problem(buffer: bytes, problem: str | None) -> None:
    assert head_problem(bytearray(buffer)) == problem


@pytest.mark.parametrize(
    ("fields", "version", "problem"),
    [
        ([], "1.0", None),
        ([], "1.1", request_heads.HOST),
        ([("host", "x"), ("content-length", "12")], "1.1", None),
        ([("host", "x"), ("content-length", "\u0661")], "1.1", request_heads.CONTENT_LENGTH),
        ([("", "x")], "1.0", "header name '' is not a token"),
        ([("host", "x"), ("x-\udcff", "x")], "1.1", "header name 'x-\\\\udcff' is not a token"),
    ],
)
def test_fields_problem(fields: list[tuple[str, str]], version: str, problem: str | None) -> None:
    found = fields_problem(Header(fields), version)
    assert found == problem if problem is None else (found or "").startswith(problem)


def test_why_refused_is_none_for_what_it_cannot_name() -> None:
    assert why_refused(bytearray(b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n")) is None
