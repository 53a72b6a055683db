"""Request heads that are not HTTP/1.1 as the server reads it, and header fields a proxy
could frame differently, sent to ``coinlink serve`` over raw sockets: each is answered 400
at once, naming the fix, and the connection closes.

The read bound is set far above what a test waits, so an answer is never the 408 that
used to end these after 10 s."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from coinlink.serving import request_heads
from tests.support.apps import ServerProcess, instance_env, running_server
from tests.support.raw_http import client_hello, read_response


@pytest.fixture(scope="module")
def server(module_pg_url: str) -> Iterator[ServerProcess]:
    with running_server(instance_env(module_pg_url, http_read_timeout_s="60")) as server:
        yield server


def send(server: ServerProcess, *parts: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    for part in parts:
        sock.sendall(part)
    return sock


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"GET /health HTTP/1.1\nHost: x\n\n", request_heads.LINE_ENDINGS),
        (b"GET /health HTTP/1.1\r\nHost: x\n\r\n", request_heads.LINE_ENDINGS),
        (b"GET /health HTTP/1.1\r\nHost: x\nX-Injected: y\r\n\r\n", request_heads.LINE_ENDINGS),
        (b"GET /health HTTP/1.1\rHost: x\r\r", request_heads.LINE_ENDINGS),
        (b"GET /health\r\n", request_heads.REQUEST_LINE),  # HTTP/0.9
        (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", request_heads.REQUEST_LINE),
        (b"GET  /health HTTP/1.1\r\n", request_heads.REQUEST_LINE),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", request_heads.VERSION),  # h2c prior knowledge
        (b"GET /health HTTP/1.2\r\n", request_heads.VERSION),
        (client_hello(), request_heads.TLS_ON_PLAIN_PORT),
    ],
    ids=[
        "bare-lf",
        "bare-lf-last",
        "bare-lf-inside",
        "bare-cr",
        "http-0.9",
        "space-in-target",
        "double-space",
        "http2-preface",
        "http-1.2",
        "tls-client-hello",
    ],
)
def test_a_head_that_is_not_http_1_1_is_refused_at_once_naming_the_fix(
    server: ServerProcess, head: bytes, message: str
) -> None:
    with send(server, head) as sock:
        status, headers, body = read_response(sock)
        assert sock.recv(1) == b"", "the connection stays open"
    assert status == 400
    assert body["error"]["code"] == "bad_request"  # type: ignore[index]
    assert body["error"]["message"] == message  # type: ignore[index]
    assert headers["connection"] == "close"
    assert server.unexpected_errors() == []


LOGIN = b"POST /api/v2/auth/login HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"GET /health HTTP/1.1\r\n\r\n", request_heads.HOST),
        (b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", request_heads.HOST),
        (b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n", "header name 'host ' is not a token"),
        (b"GET /health HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", "header name '' is not a token"),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nNo colon\r\n\r\n", request_heads.NO_COLON),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", request_heads.FOLDING),
        ("Content-Length: \u0662\r\n\r\n{}".encode(), request_heads.CONTENT_LENGTH),
        (b"Content-Length: 2, 2\r\n\r\n{}", request_heads.CONTENT_LENGTH),
        (b"Content-Length: +2\r\n\r\n{}", request_heads.CONTENT_LENGTH),
        (b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}", request_heads.FRAMING),
        (
            b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
            request_heads.FRAMING,
        ),
        (b"Transfer-Encoding: gzip, chunked\r\n\r\n", request_heads.TRANSFER_CODING),
        (b"Transfer-Encoding: CHUNKED\r\n\r\n", request_heads.TRANSFER_CODING),
    ],
    ids=[
        "no-host",
        "two-hosts",
        "space-before-colon",
        "empty-name",
        "no-colon",
        "obs-fold",
        "arabic-indic-length",
        "length-list",
        "signed-length",
        "two-lengths",
        "length-and-chunked",
        "gzip-coding",
        "upper-case-chunked",
    ],
)
def test_header_fields_a_proxy_could_read_otherwise_are_refused_naming_which(
    server: ServerProcess, head: bytes, message: str
) -> None:
    # Request smuggling hides a second request where a proxy and the app disagree on framing.
    request = head if head.startswith(b"GET") else LOGIN + head
    with send(server, request) as sock:
        status, headers, body = read_response(sock)
        assert sock.recv(1) == b"", "the connection stays open"
    assert (status, headers["connection"]) == (400, "close")
    assert body["error"]["message"].startswith(message)  # type: ignore[index]
    assert server.unexpected_errors() == []


def test_an_http_1_0_request_needs_no_host(server: ServerProcess) -> None:
    with send(server, b"GET /health HTTP/1.0\r\n\r\n") as sock:
        assert read_response(sock)[0] == 200


def test_a_head_arriving_in_pieces_is_served(server: ServerProcess) -> None:
    # A CR whose LF comes in the next packet, a request line in two: nothing is refused early.
    with send(server, b"GET /hea", b"lth HTTP/1.1\r", b"\nHost: x\r", b"\n\r\n") as sock:
        assert read_response(sock)[0] == 200


def test_a_bad_head_after_a_good_request_on_the_same_connection_is_refused(
    server: ServerProcess,
) -> None:
    with send(server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n") as sock:
        assert read_response(sock)[0] == 200
        sock.sendall(b"GET /health HTTP/1.1\nHost: x\n\n")
        status, _, body = read_response(sock)
    assert (status, body["error"]["message"]) == (400, request_heads.LINE_ENDINGS)  # type: ignore[index]
