"""CoinLink's faster header sanitiser strips exactly what Sanic's strips."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from sanic.response import BaseHTTPResponse, HTTPResponse
from sanic.response.types import HEADER_TRANSLATION_TABLE

from coinlink import middleware


@given(st.text(alphabet=st.sampled_from("ab:; \r\n\x00\t\x7fé€")) | st.text())
def test_same_result_as_sanics_translate(value: str) -> None:
    assert middleware._sanitize_header_value(value) == value.translate(HEADER_TRANSLATION_TABLE)


def test_installed_sanitiser_still_strips_cr_lf_and_nul() -> None:
    middleware.speed_up_header_encoding()
    assert BaseHTTPResponse._sanitize_header_value is middleware._sanitize_header_value
    response = HTTPResponse(b"", headers={"X-Injected\r\n": "a\r\nSet-Cookie: x=1\x00"})
    assert dict(response.processed_headers)[b"X-Injected"] == b"aSet-Cookie: x=1"
