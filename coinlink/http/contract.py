"""Each route's declaration, the one source of both its behaviour and its OpenAPI operation.

``@operation(...)`` wraps a handler: it authenticates as declared (bearer token, admin),
parses the query string and the body into the declared models, and hands them to the handler
as ``query=`` and ``body=``. What a handler parses is therefore what the document says, and
:mod:`coinlink.http.openapi` builds the document from these declarations alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Literal, TypeVar

from pydantic import BaseModel
from sanic import HTTPResponse, Request

from coinlink.http.auth import Forbidden, authenticate, current_user
from coinlink.http.request import Query, parse_body, parse_query

Auth = Literal["none", "bearer", "admin"]
Handler = TypeVar("Handler", bound=Callable[..., Awaitable[HTTPResponse]])

_ATTRIBUTE = "__coinlink_operation__"


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented response: its description, its body's model (None: no body)."""

    description: str
    model: type[BaseModel] | None = None
    media_type: str = "application/json"
    # OpenAPI links: name -> (operationId, {parameter: runtime expression}).
    links: Mapping[str, tuple[str, Mapping[str, str]]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # name -> description


@dataclass(frozen=True, slots=True)
class Operation:
    operation_id: str
    summary: str
    tag: str
    auth: Auth
    query: type[Query] | None
    body: type[BaseModel] | None
    replies: Mapping[int, Reply]
    errors: Mapping[int, str]
    """Error statuses this route returns besides those its declaration implies (401 for a
    secured route, 400/413/422 for a body, ...), each with the codes it carries."""
    rate_limited: bool
    description: str | None


def operation(
    *,
    summary: str,
    tag: str,
    replies: Mapping[int, Reply],
    auth: Auth = "none",
    query: type[Query] | None = None,
    body: type[BaseModel] | None = None,
    errors: Mapping[int, str] | None = None,
    rate_limited: bool = True,
    description: str | None = None,
) -> Callable[[Handler], Handler]:
    """Declare a route (see the module docstring); put it right under ``@bp.get(...)``."""

    def declare(handler: Handler) -> Handler:
        declared = Operation(
            operation_id=handler.__name__,
            summary=summary,
            tag=tag,
            auth=auth,
            query=query,
            body=body,
            replies=replies,
            errors=errors or {},
            rate_limited=rate_limited,
            description=description,
        )

        @wraps(handler)
        async def wrapper(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
            if auth != "none":
                await authenticate(request)
                if auth == "admin" and not (await current_user(request)).is_admin:
                    raise Forbidden("this needs an admin account")
            if query is not None:
                kwargs["query"] = parse_query(request, query)
            if body is not None:
                kwargs["body"] = parse_body(request, body)
            return await handler(request, *args, **kwargs)

        setattr(wrapper, _ATTRIBUTE, declared)
        return wrapper  # type: ignore[return-value]

    return declare


def declaration(handler: Callable[..., Any]) -> Operation | None:
    """The route's declaration, None for a handler without one."""
    found: Operation | None = getattr(handler, _ATTRIBUTE, None)
    return found
