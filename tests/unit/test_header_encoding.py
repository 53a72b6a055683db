"""The header-encoding adapter (``coinlink.http.header_encoding``) gives exactly Sanic's bytes.

If one of these fails after a Sanic upgrade, the adapter relies on something that changed:
read its docstring, compare with the new Sanic, and adapt or drop it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sanic import HTTPResponse, Request
from sanic.headers import format_http1_response
from sanic.response import BaseHTTPResponse, text
from sanic.response.types import HEADER_TRANSLATION_TABLE

from coinlink.http import header_encoding
from tests.support.adapters import check_signature, check_versions
from tests.support.in_process import bare_app, serving

# Sanic's own code, as installed before CoinLink replaces it (modules are imported before
# any test builds an app).
SANIC_PROCESSED_HEADERS = BaseHTTPResponse.processed_headers
SANIC_SANITIZE = BaseHTTPResponse._sanitize_header_value
SANIC_SANITIZE_ATTRIBUTE = BaseHTTPResponse.__dict__["_sanitize_header_value"]  # staticmethod


def test_the_comparison_is_with_sanics_own_code() -> None:
    assert SANIC_PROCESSED_HEADERS.fget.__module__ == "sanic.response.types"  # type: ignore[attr-defined]
    assert SANIC_SANITIZE.__module__ == "sanic.response.types"


def test_sanic_is_a_version_the_adapter_was_checked_against() -> None:
    check_versions(header_encoding)


def test_what_the_adapter_replaces_is_still_there_with_the_same_shape() -> None:
    assert isinstance(SANIC_SANITIZE_ATTRIBUTE, staticmethod), (
        "coinlink.http.header_encoding replaces BaseHTTPResponse._sanitize_header_value, "
        "which is no longer a static method of it"
    )
    check_signature(header_encoding, SANIC_SANITIZE, "(value: str) -> str")
    assert isinstance(SANIC_PROCESSED_HEADERS, property), (
        "coinlink.http.header_encoding replaces the property BaseHTTPResponse.processed_headers"
    )
    check_signature(
        header_encoding,
        SANIC_PROCESSED_HEADERS.fget,
        "(self) -> collections.abc.Iterator[tuple[bytes, bytes]]",
    )
    assert str.maketrans("", "", "\r\n\x00") == HEADER_TRANSLATION_TABLE, (
        "Sanic no longer strips exactly CR, LF and NUL from headers: "
        "coinlink.http.header_encoding.install() now leaves Sanic's code in place"
    )


@given(st.text(alphabet=st.sampled_from("ab:; \r\n\x00\t\x7fé€")) | st.text())
def test_same_result_as_sanics_translate(value: str) -> None:
    assert header_encoding.sanitize(value) == value.translate(HEADER_TRANSLATION_TABLE)


@given(
    st.lists(
        st.tuples(
            st.text(alphabet=st.sampled_from("abX-\r\n\x00"), min_size=1),
            st.text(alphabet=st.sampled_from("ab; \r\n\x00é€"))
            | st.integers()
            | st.sampled_from(["nosniff", "DENY", "1"]),
        ),
        max_size=12,
    ),
    st.sampled_from([200, 204, 304, 404, 429]),
)
def test_same_response_head_as_sanic(headers: list[tuple[str, object]], status: int) -> None:
    header_encoding.install()
    ours = HTTPResponse(b"{}", status=status, content_type="application/json")
    theirs = HTTPResponse(b"{}", status=status, content_type="application/json")
    for name, value in headers:
        ours.headers.add(name, value)
        theirs.headers.add(name, value)
    ours_head = format_http1_response(status, ours.processed_headers)
    theirs_head = format_http1_response(status, SANIC_PROCESSED_HEADERS.fget(theirs))  # type: ignore[attr-defined]
    assert ours_head == theirs_head
    assert ours_head == format_http1_response(status, ours.processed_headers)  # cached


def test_installed_encoding_still_strips_cr_lf_and_nul() -> None:
    header_encoding.install()
    assert BaseHTTPResponse._sanitize_header_value is header_encoding.sanitize
    response = HTTPResponse(b"", headers={"X-Injected\r\n": "a\r\nSet-Cookie: x=1\x00"})
    assert dict(response.processed_headers)[b"X-Injected"] == b"aSet-Cookie: x=1"


# -- through a real Sanic server -----------------------------------------------------------

# What a handler may put in headers: an injection attempt, a non-str value, non-ASCII.
HOSTILE_HEADERS: dict[str, Any] = {
    "X-Injected\r\n": "a\r\nSet-Cookie: x=1\x00",
    "X-Count": 7,
    "X-Text": "caf\u00e9",
    "X-Plain": "nosniff",
}


@pytest.fixture
def sanics_own_encoding(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Sanic's encoding in place for the test; whatever was installed before comes back."""
    monkeypatch.setattr(BaseHTTPResponse, "processed_headers", SANIC_PROCESSED_HEADERS)
    monkeypatch.setattr(BaseHTTPResponse, "_sanitize_header_value", SANIC_SANITIZE_ATTRIBUTE)
    yield


async def raw_get(port: int, path: str) -> bytes:
    """The response exactly as it came off the socket (the server closes after it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
    try:
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


@pytest.mark.usefixtures("sanics_own_encoding")
async def test_a_real_server_sends_the_same_bytes_with_the_adapter_as_without() -> None:
    app = bare_app()

    @app.get("/h")
    async def hostile(request: Request) -> HTTPResponse:
        return text("ok", headers=HOSTILE_HEADERS)

    async with serving(app) as port:
        sanics = await raw_get(port, "/h")
        header_encoding.install()
        hits = header_encoding.encode_header.cache_info().hits
        ours = await raw_get(port, "/h")
        again = await raw_get(port, "/h")

    assert sanics.startswith(b"HTTP/1.1 200 OK\r\n"), sanics
    assert b"\r\nX-Injected: aSet-Cookie: x=1\r\n" in sanics  # nothing injected
    assert ours == sanics == again, (
        "coinlink.http.header_encoding: a real Sanic response differs with the adapter:\n"
        f"Sanic: {sanics!r}\nours:  {ours!r}"
    )
    assert header_encoding.encode_header.cache_info().hits > hits, (
        "coinlink.http.header_encoding: Sanic's HTTP/1 writer no longer reads "
        "BaseHTTPResponse.processed_headers; the adapter is dead code now"
    )
