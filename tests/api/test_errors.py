"""Every error, Sanic's own included, has the contract's envelope and never a traceback."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator

import pytest
from sanic import HTTPResponse, Request, Sanic, json
from sanic_testing.reusable import ReusableClient

from coinlink.http.request import Body, parse_body
from tests.support.services import free_port

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


class Echo(Body):
    name: str
    count: int


@pytest.fixture(scope="module")
def client(app: Sanic) -> Iterator[ReusableClient]:
    # Routes that exist only here, to drive the parsing and failure paths end to end.
    async def echo(request: Request) -> HTTPResponse:
        body = parse_body(request, Echo)
        return json(body.model_dump())

    async def boom(request: Request) -> HTTPResponse:
        raise RuntimeError("secret internal detail /etc/passwd")

    app.add_route(echo, "/_test/echo", methods=["POST"])
    app.add_route(boom, "/_test/boom")
    with ReusableClient(app, port=free_port()) as client:
        yield client


def assert_envelope(response, status: int, code: str) -> dict:
    assert response.status == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json["error"]
    assert set(error) == {"code", "message", "details", "trace_id"}
    assert error["code"] == code
    assert error["message"]
    assert error["trace_id"] == response.headers["x-request-id"]
    return error


def test_unknown_route_is_404_envelope(client: ReusableClient) -> None:
    _, response = client.get("/no/such/route")
    assert_envelope(response, 404, "not_found")


def test_wrong_method_is_405_envelope_with_allow(client: ReusableClient) -> None:
    _, response = client.delete("/health")
    assert_envelope(response, 405, "method_not_allowed")
    assert "GET" in response.headers.get("allow", "")


def test_a_405_on_a_path_with_a_parameter_says_what_is_allowed(client: ReusableClient) -> None:
    """Sanic names the allowed methods only for fixed paths; RFC 9110 wants them always."""
    _, response = client.request("/api/v2/alerts/some-id", http_method="trace")
    assert_envelope(response, 405, "method_not_allowed")
    allowed = {method.strip() for method in response.headers["allow"].split(",")}
    assert {"GET", "PATCH", "DELETE"} <= allowed and "POST" not in allowed


def test_malformed_json_is_400_invalid_json(client: ReusableClient) -> None:
    _, response = client.post(
        "/_test/echo", content=b'{"name": "x", ', headers={"content-type": "application/json"}
    )
    assert_envelope(response, 400, "invalid_json")


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b""])
def test_body_that_is_not_an_object_is_400(client: ReusableClient, body: bytes) -> None:
    _, response = client.post("/_test/echo", content=body)
    assert_envelope(response, 400, "invalid_json")


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",  # what curl -d sends
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        "application/jsonp",
        "",
    ],
)
def test_a_body_of_another_media_type_is_415_naming_json(
    client: ReusableClient, content_type: str
) -> None:
    _, response = client.post(
        "/_test/echo", content=b'{"name": "x", "count": 1}', headers={"content-type": content_type}
    )
    error = assert_envelope(response, 415, "unsupported_media_type")
    assert "Content-Type: application/json" in error["message"]
    assert error["details"] == {"expected": "application/json"}


def test_a_compressed_body_is_415_asking_for_it_uncompressed(client: ReusableClient) -> None:
    _, response = client.post(
        "/_test/echo",
        content=gzip.compress(b'{"name": "x", "count": 1}'),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    error = assert_envelope(response, 415, "unsupported_media_type")
    assert error["message"].startswith("send the body uncompressed")


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/JSON; charset=UTF-8",
        'application/json;charset="utf-8"',
        "application/merge-patch+json",
        None,  # no Content-Type at all: read as JSON
    ],
)
def test_a_json_body_is_read_whatever_its_json_media_type(
    client: ReusableClient, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    _, response = client.post("/_test/echo", content=b'{"name": "x", "count": 1}', headers=headers)
    assert response.status == 200, response.text


def test_validation_error_is_422_naming_each_field(client: ReusableClient) -> None:
    _, response = client.post("/_test/echo", json={"count": "many", "is_admin": True})
    error = assert_envelope(response, 422, "validation_error")
    fields = error["details"]["fields"]
    assert set(fields) == {"name", "count", "is_admin"}
    assert "read-only" in fields["is_admin"]


def test_valid_body_passes(client: ReusableClient) -> None:
    _, response = client.post("/_test/echo", json={"name": "ada", "count": 3})
    assert response.status == 200
    assert response.json == {"name": "ada", "count": 3}


def test_body_over_limit_is_413(client: ReusableClient, app: Sanic) -> None:
    limit = app.ctx.settings.max_body_bytes
    _, response = client.post("/_test/echo", content=b"x" * (limit + 1))
    assert_envelope(response, 413, "payload_too_large")
    # The refusal names the limit and the setting that raises it.
    assert response.json["error"]["details"] == {"max_bytes": limit}
    assert "COINLINK_MAX_BODY_BYTES" in response.json["error"]["message"]


def test_a_url_or_header_over_the_head_limit_is_413_saying_so(
    client: ReusableClient, app: Sanic
) -> None:
    # Not "request body over ... bytes": the body was empty; the URL or a header was long.
    limit = app.config.REQUEST_MAX_HEADER_SIZE
    for path, headers in (("/health?q=" + "a" * limit, {}), ("/health", {"x-big": "a" * limit})):
        _, response = client.get(path, headers=headers)
        assert_envelope(response, 413, "payload_too_large")
        assert response.json["error"]["details"] == {"max_header_bytes": limit}
        assert "shorten the URL" in response.json["error"]["message"]


def test_body_at_limit_is_accepted_for_parsing(client: ReusableClient, app: Sanic) -> None:
    limit = app.ctx.settings.max_body_bytes
    padding = "y" * (limit - len('{"name":"","count":1}'))
    _, response = client.post("/_test/echo", content=f'{{"name":"{padding}","count":1}}'.encode())
    assert response.status == 200


@pytest.mark.expected_errors("unhandled_exception")
def test_unhandled_exception_is_500_without_traceback(client: ReusableClient) -> None:
    _, response = client.get("/_test/boom")
    error = assert_envelope(response, 500, "internal_error")
    assert TRACE_ID.match(error["trace_id"])
    for leak in ("Traceback", "RuntimeError", "secret internal detail", "/etc/passwd", 'File "'):
        assert leak not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
