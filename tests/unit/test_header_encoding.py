"""CoinLink's faster header encoding produces exactly what Sanic's produces."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from sanic.headers import format_http1_response
from sanic.response import BaseHTTPResponse, HTTPResponse
from sanic.response.types import HEADER_TRANSLATION_TABLE

from coinlink.http import middleware

# Sanic's own code, as installed before CoinLink replaces it.
SANIC_PROCESSED_HEADERS = BaseHTTPResponse.processed_headers
SANIC_SANITIZE = BaseHTTPResponse._sanitize_header_value


def test_the_comparison_is_with_sanics_own_code() -> None:
    assert SANIC_PROCESSED_HEADERS.fget.__module__ == "sanic.response.types"  # type: ignore[attr-defined]
    assert SANIC_SANITIZE.__module__ == "sanic.response.types"


@given(st.text(alphabet=st.sampled_from("ab:; \r\n\x00\t\x7fé€")) | st.text())
def test_same_result_as_sanics_translate(value: str) -> None:
    assert middleware._sanitize_header_value(value) == value.translate(HEADER_TRANSLATION_TABLE)


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
    middleware.speed_up_header_encoding()
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
    middleware.speed_up_header_encoding()
    assert BaseHTTPResponse._sanitize_header_value is middleware._sanitize_header_value
    response = HTTPResponse(b"", headers={"X-Injected\r\n": "a\r\nSet-Cookie: x=1\x00"})
    assert dict(response.processed_headers)[b"X-Injected"] == b"aSet-Cookie: x=1"
