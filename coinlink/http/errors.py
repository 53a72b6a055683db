"""The one error envelope, for every error from every route.

``{"error": {"code", "message", "details", "trace_id"}}``. Handlers raise :class:`ApiError`
(or a subclass) for what is about HTTP; services raise plain domain errors, which
:data:`DOMAIN_ERRORS` maps to a status and code here, at the edge. Sanic's own exceptions
(404, 405, 413, ...) and anything unexpected are rendered by :class:`EnvelopeErrorHandler` in
the same shape. A 500 is logged with the trace id and the traceback; the client only ever
sees a generic message. A client that hangs up mid-request is no error (499, logged at info).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import structlog
from pydantic import ValidationError
from sanic import HTTPResponse, Request
from sanic.exceptions import RequestCancelled, SanicException
from sanic.handlers import ErrorHandler

from coinlink.accounts.passwords import HashingBusy
from coinlink.accounts.service import AuthError, EmailTaken
from coinlink.alerts.notifications import NotificationNotFound
from coinlink.alerts.service import AlertNotFound
from coinlink.alerts.store import AlertLimitReached
from coinlink.bus.base import BusError
from coinlink.http.middleware import UNMATCHED_ROUTE, route_label
from coinlink.http.trace_ids import trace_id_of
from coinlink.invalid import Invalid
from coinlink.market.service import AdminTicksDisabled, NoIngestLeader, UnknownSymbol
from coinlink.observability.sentry import report_exception

log = structlog.get_logger(logger_name="coinlink.http.errors")

_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    417: "expectation_failed",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}
_SANIC_MESSAGES = {
    404: "no such route",
    405: "method not allowed on this route",
}


class ApiError(Exception):
    """An error with a status, a stable ``code`` and a human message."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status or self.status
        self.code = code or self.code
        self.details = details
        self.headers = headers or {}


class InvalidJson(ApiError):
    status = 400
    code = "invalid_json"


class RequestValidationError(ApiError):
    """422 with ``details.fields``: ``{"field.path": "what is wrong"}``."""

    status = 422
    code = "validation_error"

    def __init__(self, fields: dict[str, str], message: str = "request is invalid") -> None:
        super().__init__(message, details={"fields": fields})

    @classmethod
    def from_pydantic(
        cls, exc: ValidationError, prefix: str = "", *, tagged: bool = False
    ) -> RequestValidationError:
        """``tagged``: the model is a union chosen by a tag field, whose value pydantic puts
        first in each error's location (``pct_change.window_s``): left out."""
        fields: dict[str, str] = {}
        for error in exc.errors(include_url=False):
            loc = error["loc"][1:] if tagged else error["loc"]
            path = ".".join(str(part) for part in loc) or "body"
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
                context = error.get("ctx", {})
                path = str(context.get("discriminator", "")).strip("'") or path
                message = (
                    "is required"
                    if error["type"] == "union_tag_not_found"
                    else (f"must be one of {context.get('expected_tags', '')}")
                )
            if error["type"] == "extra_forbidden":
                message = "unknown or read-only field"
            fields.setdefault(prefix + path, message)
        return cls(fields)


class NotFound(ApiError):
    status = 404
    code = "not_found"


class ServiceUnavailable(ApiError):
    status = 503
    code = "service_unavailable"


def _unauthenticated(e: AuthError) -> ApiError:
    # RFC 6750: a bad token names the error in the challenge; a bad password does not.
    challenge = "Bearer" if e.code == "invalid_credentials" else 'Bearer error="invalid_token"'
    return ApiError(str(e), status=401, code=e.code, headers={"WWW-Authenticate": challenge})


DomainError = Callable[[Any], ApiError]
DOMAIN_ERRORS: dict[type[Exception], DomainError] = {
    AuthError: _unauthenticated,
    EmailTaken: lambda e: ApiError(str(e), status=409, code="email_taken"),
    HashingBusy: lambda e: ServiceUnavailable(str(e), headers={"Retry-After": "1"}),
    UnknownSymbol: lambda e: ApiError(
        str(e), status=404, code="unknown_symbol", details={"symbol": e.symbol}
    ),
    AdminTicksDisabled: lambda e: NotFound(str(e), details={"setting": e.SETTING}),
    NoIngestLeader: lambda e: ServiceUnavailable(str(e), headers={"Retry-After": "1"}),
    AlertLimitReached: lambda e: ApiError(
        str(e), status=409, code="alert_limit_reached", details={"cap": e.cap}
    ),
    AlertNotFound: lambda e: NotFound(str(e)),
    NotificationNotFound: lambda e: NotFound(str(e)),
    Invalid: lambda e: RequestValidationError(e.fields),
}
"""What each domain error is at the edge: the service says what went wrong, not how HTTP
says it."""


def as_api_error(exception: Exception) -> ApiError | None:
    """The :class:`ApiError` a domain error stands for (None: it is not one)."""
    for cls in type(exception).__mro__:
        mapping = DOMAIN_ERRORS.get(cls)
        if mapping is not None:
            return mapping(exception)
    return None


def error_body(code: str, message: str, details: dict[str, Any] | None, trace_id: str) -> bytes:
    # A message may quote request bytes that are not UTF-8 (Sanic decodes them to
    # surrogates, which JSON cannot hold): they are shown escaped.
    message = message.encode(errors="backslashreplace").decode()
    return orjson.dumps(
        {"error": {"code": code, "message": message, "details": details, "trace_id": trace_id}}
    )


def error_response(
    request: Request | None,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> HTTPResponse:
    body = error_body(code, message, details, trace_id_of(request))
    return HTTPResponse(body, status=status, headers=headers, content_type="application/json")


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """The methods the request's path answers (RFC 9110: a 405 says them in ``Allow``).
    Sanic names them for fixed paths only, not for paths with a parameter."""
    allowed = []
    for method in _METHODS:
        try:
            request.app.router.get(request.path, method, request.host)
        except SanicException:
            continue
        allowed.append(method)
    return allowed


class EnvelopeErrorHandler(ErrorHandler):
    """Renders every exception Sanic catches as the envelope."""

    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        if isinstance(exception, RequestCancelled):
            # The client hung up mid-request: nothing failed here, so no traceback and no
            # Sentry event. Nobody receives the response; the access log shows nginx's 499.
            log.info(
                "client_disconnected",
                trace_id=trace_id_of(request),
                route=route_label(request) if request else UNMATCHED_ROUTE,
            )
            return error_response(request, 499, "client_closed_request", "client disconnected")
        exception = as_api_error(exception) or exception
        if isinstance(exception, ApiError):
            return error_response(
                request,
                exception.status,
                exception.code,
                exception.message,
                exception.details,
                exception.headers,
            )
        if isinstance(exception, BusError):
            # A dependency is down, not a bug: no traceback, no Sentry event; readiness
            # reports it too.
            log.warning(
                "dependency_unavailable", trace_id=trace_id_of(request), error=str(exception)
            )
            return error_response(
                request,
                503,
                "service_unavailable",
                "a dependency is unavailable; retry shortly",
                headers={"Retry-After": "1"},
            )
        if isinstance(exception, SanicException) and exception.status_code < 500:
            status = exception.status_code
            code = _CODES_BY_STATUS.get(status, "error")
            message = _SANIC_MESSAGES.get(status) or str(exception) or code.replace("_", " ")
            details = None
            if status == 413 and request is not None and request.method == "NONE":
                # Sanic's stand-in request: the request line and headers were too long.
                limit = request.app.config.REQUEST_MAX_HEADER_SIZE
                message = (
                    f"request line and headers over {limit} bytes: "
                    "shorten the URL, its query string or a header"
                )
                details = {"max_header_bytes": limit}
            elif status == 413 and request is not None:
                limit = request.app.config.REQUEST_MAX_SIZE
                message = f"request body over {limit} bytes (COINLINK_MAX_BODY_BYTES)"
                details = {"max_bytes": limit}
            headers = dict(getattr(exception, "headers", None) or {})
            if status == 405 and "Allow" not in headers and request is not None:
                headers["Allow"] = ", ".join(allowed_methods(request))
            return error_response(request, status, code, message, details, headers)
        status = getattr(exception, "status_code", 500)
        status = status if isinstance(status, int) and 500 <= status < 600 else 500
        trace_id = trace_id_of(request)
        route = route_label(request) if request else UNMATCHED_ROUTE
        log.error(
            "unhandled_exception",
            trace_id=trace_id,
            route=route,
            error_type=type(exception).__name__,
            exc_info=exception,
        )
        report_exception(exception, trace_id, route)
        return error_response(
            request,
            status,
            _CODES_BY_STATUS.get(status, "internal_error"),
            "internal server error; quote the trace id when reporting it",
        )
