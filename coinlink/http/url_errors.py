"""A request whose target is not a URL (``GET health``, a scanner's ``sip:nm``) answered 400.

Sanic answers a bad request through a stand-in request (method ``NONE``) built from the
same target; parsing it again raised again, so the connection closed unanswered and
Sanic logged ``protocol.connection_task uncaught`` at error level (sanic-org/sanic#2735).
"""

from __future__ import annotations

from typing import Any

from sanic import Request
from sanic.exceptions import BadURL


class StandInSafeRequest(Request):
    """Sanic's request; the stand-in for an unparsable target gets ``*`` instead, so the
    400 naming the bad URL is sent."""

    def __init__(self, url_bytes: bytes, *args: Any, **kwargs: Any) -> None:
        try:
            super().__init__(url_bytes, *args, **kwargs)
        except BadURL:
            if kwargs.get("method") != "NONE":
                raise  # a real request: Sanic answers it through the stand-in below
            super().__init__(b"*", *args, **kwargs)
