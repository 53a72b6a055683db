"""Sentry receives unhandled errors with the trace id, and nothing personal."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sentry_sdk
from sanic import HTTPResponse, Request, Sanic
from sanic.exceptions import RequestCancelled
from sanic_testing.reusable import ReusableClient

from coinlink.http import errors
from tests.support.apps import build_app
from tests.support.logs import logged_by
from tests.support.sentry_ingest import SentryIngest, sentry_ingest
from tests.support.services import free_port


@pytest.fixture
def ingest() -> Iterator[SentryIngest]:
    with sentry_ingest() as ingest:
        yield ingest
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # no DSN: the rest of the suite reports nowhere


def with_sentry(ingest: SentryIngest, pg_url: str, redis_url: str) -> Sanic:
    return build_app(pg_url, redis_url, sentry_dsn=ingest.dsn)


@pytest.mark.expected_errors("unhandled_exception")
def test_unhandled_error_reaches_sentry_without_pii(
    ingest: SentryIngest, pg_url: str, redis_url: str
) -> None:
    app = with_sentry(ingest, pg_url, redis_url)

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

    events = ingest.raw()
    assert b"sentry-visible failure" in events
    assert b'"trace_id":"trace-for-sentry"' in events  # the id the client can quote
    assert b'"route":"/_test/boom"' in events
    for leaked in [*secret.values(), email]:
        assert leaked.encode() not in events
    assert b"ip_address" not in events


def test_a_client_hanging_up_is_logged_at_info_and_not_reported(
    ingest: SentryIngest, pg_url: str, redis_url: str
) -> None:
    app = with_sentry(ingest, pg_url, redis_url)

    async def hung_up(request: Request) -> HTTPResponse:
        raise RequestCancelled()  # what Sanic raises into a request whose client left

    app.add_route(hung_up, "/_test/hung-up")
    with ReusableClient(app, port=free_port()) as client, logged_by(errors) as logs:
        _, response = client.get("/_test/hung-up", headers={"x-request-id": "trace-hung-up"})
        sentry_sdk.flush(5)  # a report, had there been one, is delivered by now

    assert response.status == 499
    assert [(log["event"], log["log_level"], log["trace_id"]) for log in logs] == [
        ("client_disconnected", "info", "trace-hung-up")
    ]
    assert ingest.envelopes() == []
