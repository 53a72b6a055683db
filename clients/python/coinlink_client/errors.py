"""What can go wrong, as exceptions: the server's error envelope, or the stream ending."""

from __future__ import annotations

from typing import Any


class CoinLinkError(Exception):
    """An error answer of the REST API: its HTTP ``status`` and the envelope's ``code``,
    ``message``, ``details`` and ``trace_id`` (quote the trace id when reporting)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        trace_id: str | None = None,
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message} (trace id {trace_id})")
        self.status = status
        self.code = code
        self.message = message
        self.trace_id = trace_id
        self.details = details or {}
        self.retry_after = retry_after


class BadRequest(CoinLinkError):
    """400, 413 or 415: the request itself is malformed."""


class AuthenticationError(CoinLinkError):
    """401: no, a bad or an expired token that no refresh could replace, wrong credentials,
    or a refresh token already spent (``token_reused``: the session is revoked)."""


class Forbidden(CoinLinkError):
    """403: an admin route for a user who is not an admin."""


class NotFound(CoinLinkError):
    """404: no such resource (or not the caller's), or ``unknown_symbol``."""


class Conflict(CoinLinkError):
    """409: e.g. ``email_taken``."""


class ValidationError(CoinLinkError):
    """422: ``details["fields"]`` maps each bad field to the reason."""


class RateLimited(CoinLinkError):
    """429 once the retries allowed are spent (or for a request that is not retried);
    ``retry_after`` says how long to wait."""


class ServerError(CoinLinkError):
    """5xx: ``internal_error``, ``service_unavailable``..."""


class UnexpectedResponse(CoinLinkError):
    """A success answer that is not CoinLink's JSON (``code`` ``not_coinlink``): the base
    URL reaches something else, such as a web page or a captive portal."""


_BY_STATUS: dict[int, type[CoinLinkError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: BadRequest,
    415: BadRequest,
    422: ValidationError,
    429: RateLimited,
}


def error_for(status: int) -> type[CoinLinkError]:
    """The exception class of an error status."""
    return _BY_STATUS.get(status, ServerError if status >= 500 else CoinLinkError)


class StreamError(Exception):
    """The WebSocket stream cannot go on: the server refused an op (``code``, e.g.
    ``unknown_channel``), revoked the session, or closed for a reason reconnecting would
    only repeat (``close_code``)."""

    def __init__(self, code: str, message: str, close_code: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.close_code = close_code
