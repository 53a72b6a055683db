"""A request head that is not HTTP/1.1 as Sanic reads it is answered 400 at once.

Sanic's parser waits for a head to end with CRLF CRLF: a client whose lines end with a bare
LF (``printf 'GET / HTTP/1.1\\n\\n' | nc``), a TLS client on this plain port, or an HTTP/0.9
request line never sends that, and waited for the read bound (10 s) to be cut. Here a head
is checked as its bytes arrive, before Sanic parses it, and refused with a message naming
the fix as soon as it shows a mistake: a first byte that starts a TLS handshake, a line
ending other than CRLF, or a request line other than ``METHOD target HTTP/1.1`` (or 1.0).

Its header fields are held to RFC 9112 where Sanic is lenient or vague, since a proxy
that reads them differently could be made to pass a second request hidden in the body
(request smuggling): exactly one ``Host`` in HTTP/1.1; field names that are tokens (no
space before the colon, none empty); a ``Content-Length`` of ASCII digits (Sanic took
``٢`` for 2). Where Sanic refuses a head with a bare "Bad Request" (a line without a
colon, obsolete line folding, a ``Content-Length`` and a ``Transfer-Encoding``, either
twice, a transfer coding other than chunked), the refusal names which.

Behind the shipped nginx none of this reaches the app: nginx reads bare LF as a line end
and forwards CRLF, and answers a TLS handshake or a malformed request line on its plain
port with its own 400 (in the envelope: deploy/nginx/nginx.conf).

Sanic internals (``Http.http1_request_header``, ``_receive_more``, ``recv_buffer``,
``stage``): checked against ``CHECKED_VERSIONS`` by ``tests/unit/test_serving_adapters.py``.
"""

from __future__ import annotations

import re
from typing import Any

from sanic.compat import Header
from sanic.exceptions import BadRequest
from sanic.http import Http, Stage

from coinlink.http.errors import ApiError

CHECKED_VERSIONS = {"sanic": ">=25.12,<26"}
TLS_ON_PLAIN_PORT = (
    "this port speaks plain HTTP; use http:// or terminate TLS in front (a proxy or load balancer)"
)
LINE_ENDINGS = "each line of the request head must end with CRLF (\\r\\n), not a bare LF or CR"
REQUEST_LINE = "the request line must be 'METHOD /path HTTP/1.1', single spaces between"
VERSION = "this port speaks HTTP/1.1 (and 1.0); for HTTP/2 put a proxy in front"
HOST = "an HTTP/1.1 request needs exactly one Host header"
CONTENT_LENGTH = "Content-Length must be the body's size in ASCII decimal digits"
FRAMING = "send the body with one Content-Length or Transfer-Encoding: chunked, not both or twice"
TRANSFER_CODING = "Transfer-Encoding must be exactly 'chunked': send the body uncompressed"
FOLDING = "a header line begins with a space or tab (obsolete line folding): one line per header"
NO_COLON = "each header line must be 'Name: value'"
# RFC 9110 tokens, one per line (Sanic lowercases names).
_FIELD_NAMES = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+(?:\n[!#$%&'*+.^_`|~0-9a-z-]+)*")
_TLS_HANDSHAKE = 0x16  # a TLS record's first byte: handshake (a ClientHello)
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")


def head_problem(buffer: bytearray) -> str | None:
    """What is wrong with the head at the start of ``buffer`` (its bytes so far), or None
    while it may still become a valid head."""
    if buffer and buffer[0] == _TLS_HANDSHAKE:
        return TLS_ON_PLAIN_PORT
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        # Not whole yet: a CR at the end may be followed by its LF.
        end = len(buffer) - 1 if buffer.endswith(b"\r") else len(buffer)
    crlf = buffer.count(b"\r\n", 0, end)
    if buffer.count(b"\n", 0, end) != crlf or buffer.count(b"\r", 0, end) != crlf:
        return LINE_ENDINGS
    line_end = buffer.find(b"\r\n", 0, end + 2)
    if line_end < 0:
        return None
    parts = buffer[:line_end].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return REQUEST_LINE
    if parts[2] not in _VERSIONS:
        return VERSION
    return None


def fields_problem(headers: Header, version: str) -> str | None:
    """What is wrong with the header fields of a head Sanic has parsed, or None."""
    names = "\n".join(headers)  # one match for all: this runs on every request
    if headers and not _FIELD_NAMES.fullmatch(names):
        name = next((n for n in headers if not _FIELD_NAMES.fullmatch(n)), names)
        shown = name.encode(errors="backslashreplace").decode()[:40]
        return f"header name {shown!r} is not a token: no spaces (none before the colon)"
    if version == "1.1" and len(headers.getall("host", ())) != 1:
        return HOST
    length = headers.getone("content-length", None)
    if length is not None and not (length.isascii() and length.isdigit()):
        return CONTENT_LENGTH
    return None


def why_refused(buffer: bytearray) -> str | None:
    """Why Sanic refused the (whole) head at the start of ``buffer`` with a bare "Bad
    Request" or "Bad content-length"; None when it is none of these."""
    lines = bytes(buffer[: buffer.find(b"\r\n\r\n")]).split(b"\r\n")[1:]
    names = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            return FOLDING
        name, colon, value = line.partition(b":")
        if not colon:
            return NO_COLON
        name, value = name.lower(), value.strip()
        names.append(name)
        if name == b"transfer-encoding" and value != b"chunked":
            return TRANSFER_CODING
        if name == b"content-length" and not value.isdigit():
            return CONTENT_LENGTH
    if names.count(b"content-length") + names.count(b"transfer-encoding") > 1:
        return FRAMING
    return None


class HeadCheckingHttp(Http):
    """Sanic's HTTP/1.1 connection handler, refusing a head with :func:`head_problem`."""

    __slots__ = ()

    def __init__(self, protocol: Any) -> None:
        super().__init__(protocol)  # type: ignore[no-untyped-call]
        self._receive_more = self._receive_then_check

    async def http1_request_header(self) -> None:
        # Raised here, the error is answered through the envelope and the connection closes.
        _check(self.recv_buffer)
        try:
            await super().http1_request_header()  # type: ignore[no-untyped-call]
        except BadRequest as exc:  # the head is still in the buffer: say what is wrong
            raise ApiError(why_refused(self.recv_buffer) or str(exc)) from None
        problem = fields_problem(self.request.headers, self.request.version)
        if problem is not None:
            raise ApiError(problem)

    async def _receive_then_check(self) -> None:
        await self.protocol.receive_more()  # type: ignore[no-untyped-call]
        if self.stage is Stage.REQUEST:  # not a body's bytes, nor a wait between requests
            _check(self.recv_buffer)


def _check(buffer: bytearray) -> None:
    problem = head_problem(buffer)
    if problem is not None:
        raise ApiError(problem)
