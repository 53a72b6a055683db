"""Sentry receives unhandled errors with the trace id, and nothing personal."""

from __future__ import annotations

import gzip
import threading
import uuid
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import sentry_sdk
from sanic import HTTPResponse, Request
from sanic_testing.reusable import ReusableClient

from tests.support.apps import build_app
from tests.support.services import free_port


class FakeSentry(BaseHTTPRequestHandler):
    """Sentry's ingest endpoint, reduced to keeping what arrives."""

    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        encoding = self.headers.get("content-encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        self.received.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def sentry_dsn() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeSentry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeSentry.received = []
    yield f"http://publickey@127.0.0.1:{server.server_address[1]}/1"
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # no DSN: the rest of the suite reports nowhere
    server.shutdown()


@pytest.mark.expected_errors("unhandled_exception")
def test_unhandled_error_reaches_sentry_without_pii(
    sentry_dsn: str, pg_url: str, redis_url: str
) -> None:
    app = build_app(pg_url, redis_url, sentry_dsn=sentry_dsn)

    async def boom(request: Request) -> HTTPResponse:
        raise RuntimeError("sentry-visible failure")

    app.add_route(boom, "/_test/boom", methods=["POST"])
    # Made at run time so that they never appear in the source context Sentry attaches.
    secret = {part: f"{part}-{uuid.uuid4().hex}" for part in ("query", "header", "cookie", "body")}
    email = f"{uuid.uuid4().hex}@example.com"
    with ReusableClient(app, port=free_port()) as client:
        _, response = client.post(
            f"/_test/boom?api_key={secret['query']}",
            headers={
                "authorization": f"Bearer {secret['header']}",
                "cookie": f"sid={secret['cookie']}",
                "x-request-id": "trace-for-sentry",
            },
            json={"password": secret["body"], "email": email},
        )
        assert response.status == 500
        sentry_sdk.flush(5)

    events = b"".join(FakeSentry.received)
    assert b"sentry-visible failure" in events
    assert b'"trace_id":"trace-for-sentry"' in events  # the id the client can quote
    assert b'"route":"/_test/boom"' in events
    for leaked in [*secret.values(), email]:
        assert leaked.encode() not in events
    assert b"ip_address" not in events
