"""The OpenAPI 3.1 document, built from the routes' declarations (:mod:`coinlink.http.contract`).

It walks the application's routes: a route without a declaration is an error (the document
would silently miss it), except the WebSocket (its own AsyncAPI document) and the documents'
own routes under ``/docs``. Schemas come from the pydantic models the handlers parse and
render, as ``components.schemas`` referenced by ``$ref``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema
from sanic import Sanic
from sanic_routing.route import Route

from coinlink.http.contract import Operation, Reply, declaration
from coinlink.http.request import NO_CONTROL_CHARACTERS
from coinlink.http.schemas import ErrorEnvelope

OPENAPI_VERSION = "3.1.0"
DOCS_PREFIX = "/docs"
_REF = "#/components/schemas/{model}"
_PARAMETER = re.compile(r"<([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-z]+))?>")
_PATH_TYPES = {"uuid": {"type": "string", "format": "uuid"}}
_RATE_LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
_HEADERS = {
    "RateLimit-Limit": "requests allowed in the current window of the policy applied",
    "RateLimit-Remaining": "requests left in the current window",
    "RateLimit-Reset": "seconds until the window resets",
    "Retry-After": "seconds to wait before retrying",
    "WWW-Authenticate": "the Bearer challenge (RFC 6750)",
}
_TAGS = {
    "auth": "Accounts, sessions and tokens",
    "users": "The caller's profile and preferences",
    "market": "Assets, tickers, candles and the summary (public)",
    "alerts": "The caller's price alerts",
    "notifications": "The caller's notifications and webhook deliveries",
    "admin": "Operator actions (admin accounts only)",
    "operations": "Liveness, readiness and metrics",
}

Mode = Literal["validation", "serialization"]
Ref = Callable[[type[BaseModel], Mode], dict[str, Any]]


class _Names(GenerateJsonSchema):
    def normalize_name(self, name: str) -> str:
        # A generic's parametrisation reads as a name: Page[Alert] -> AlertPage.
        generic = re.fullmatch(r"(\w+)\[(\w+)\]", name)
        return f"{generic[2]}{generic[1]}" if generic else super().normalize_name(name)


class _Bodies(_Names):
    """Request bodies' strings say what parse_body refuses in all of them."""

    def str_schema(self, schema: core_schema.StringSchema) -> JsonSchemaValue:
        result = super().str_schema(schema)
        if self.mode == "validation" and not {"pattern", "format"} & set(result):
            result["pattern"] = NO_CONTROL_CHARACTERS
        return result


class Undeclared(Exception):
    """Routes without a declaration: the document would not describe them."""


def document(app: Sanic[Any, Any], *, version: str, description: str) -> dict[str, Any]:
    """The OpenAPI document of ``app``'s routes."""
    declared = list(_declared_routes(app))
    models: dict[tuple[type[BaseModel], Mode], None] = {(ErrorEnvelope, "serialization"): None}
    for _, _, op in declared:
        if op.body is not None:
            models[(op.body, "validation")] = None
        for reply in op.replies.values():
            if reply.model is not None:
                models[(reply.model, "serialization")] = None
    refs, definitions = models_json_schema(
        list(models), ref_template=_REF, schema_generator=_Bodies
    )
    schemas: dict[str, Any] = dict(definitions.get("$defs", {}))
    for name, schema in schemas.items():
        schema["title"] = name  # a generic's title is "Page[Alert]": generated clients use it

    def ref(model: type[BaseModel], mode: Mode) -> dict[str, Any]:
        return dict(refs[(model, mode)])

    paths: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for route, method, op in declared:
        if op.operation_id in seen:
            raise ValueError(f"two routes declare operationId {op.operation_id}")
        seen.add(op.operation_id)
        path, path_parameters = openapi_path(route), _path_parameters(route)
        item = paths.setdefault(path, {})
        item[method.lower()] = _operation(op, path_parameters, ref, schemas)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "CoinLink", "version": version, "description": description},
        "tags": [{"name": name, "description": text} for name, text in _TAGS.items()],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "headers": {
                name: {"description": text, "schema": {"type": "integer", "minimum": 0}}
                if name != "WWW-Authenticate"
                else {"description": text, "schema": {"type": "string"}}
                for name, text in _HEADERS.items()
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


def _declared_routes(app: Sanic[Any, Any]) -> Iterator[tuple[Route, str, Operation]]:
    missing: list[str] = []
    for route in sorted(app.router.routes, key=lambda r: r.path):
        path = "/" + route.path
        if route.extra.websocket or path.startswith(DOCS_PREFIX):
            continue
        op = declaration(route.handler)
        methods = sorted(route.methods - {"OPTIONS", "HEAD"})
        if op is None:
            missing.extend(f"{method} {path}" for method in methods)
            continue
        for method in methods:
            yield route, method, op
    if missing:
        raise Undeclared(f"routes without @operation: {', '.join(missing)}")


def openapi_path(route: Route) -> str:
    """The OpenAPI path of a Sanic route (``<alert_id:str>`` -> ``{alert_id}``)."""
    return "/" + _PARAMETER.sub(r"{\1}", route.path)


def _path_parameters(route: Route) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": _PATH_TYPES.get(label, {"type": "string"}),
        }
        for name, label in _PARAMETER.findall(route.path)
    ]


def _operation(
    op: Operation,
    path_parameters: list[dict[str, Any]],
    ref: Ref,
    schemas: dict[str, Any],
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
    }
    if op.description:
        result["description"] = op.description
    parameters = path_parameters + (_query_parameters(op.query, schemas) if op.query else [])
    if parameters:
        result["parameters"] = parameters
    if op.body is not None:
        result["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(op.body, "validation")}},
        }
    if op.auth != "none":
        result["security"] = [{"bearer": []}]
    responses: dict[str, Any] = {}
    for status, reply in sorted(op.replies.items()):
        responses[str(status)] = _reply(reply, ref, op.rate_limited)
    for status, text in sorted(_errors(op).items()):
        responses[str(status)] = _error(status, text, ref(ErrorEnvelope, "serialization"))
    result["responses"] = responses
    return result


def _query_parameters(query: type[BaseModel], schemas: dict[str, Any]) -> list[dict[str, Any]]:
    schema = query.model_json_schema(ref_template=_REF, schema_generator=_Names)
    schemas.update(schema.pop("$defs", {}))
    required = set(schema.get("required", []))
    parameters = []
    for name, prop in schema["properties"].items():
        prop = _without_null(prop)
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        text = prop.pop("description", None)
        if text:
            parameter["description"] = text
        parameter["schema"] = prop
        parameters.append(parameter)
    return parameters


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    """An absent parameter is null: a query string cannot say null otherwise."""
    prop = {k: v for k, v in prop.items() if k != "title"}
    options = [o for o in prop.pop("anyOf", []) if o != {"type": "null"}]
    if len(options) == 1:
        prop = {**options[0], **prop}
    elif options:
        prop["anyOf"] = options
    if prop.get("default", 0) is None:
        del prop["default"]
    return prop


def _reply(reply: Reply, ref: Ref, rate_limited: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"description": reply.description}
    headers = {name: _header_ref(name) for name in _RATE_LIMIT_HEADERS} if rate_limited else {}
    headers.update(
        {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in reply.headers.items()
        }
    )
    if headers:
        result["headers"] = headers
    if reply.model is not None:
        result["content"] = {reply.media_type: {"schema": ref(reply.model, "serialization")}}
    elif reply.media_type != "application/json":
        result["content"] = {reply.media_type: {"schema": {"type": "string"}}}
    if reply.links:
        result["links"] = {
            name: {"operationId": target, "parameters": dict(parameters)}
            for name, (target, parameters) in reply.links.items()
        }
    return result


def _errors(op: Operation) -> dict[int, str]:
    """The error statuses of ``op``: those its declaration implies, then its own."""
    errors: dict[int, list[str]] = {}

    def add(status: int, text: str) -> None:
        errors.setdefault(status, []).append(text)

    if op.body is not None:
        add(400, "`invalid_json`: the body is missing, not JSON, or not a JSON object")
        add(413, "`payload_too_large`: the body is over COINLINK_MAX_BODY_BYTES")
        add(415, "`unsupported_media_type`: not application/json, or compressed")
    if op.body is not None or op.query is not None:
        add(422, "`validation_error`: `details.fields` names each bad field and why")
    if op.auth != "none":
        add(
            401,
            "`unauthorized` (no token) or `invalid_token` (malformed, expired or revoked)",
        )
    if op.auth == "admin":
        add(403, "`forbidden`: the account is not an admin")
    # Every route: the server bounds each request's read and each address's connections.
    add(408, "`request_timeout`: headers and body took over COINLINK_HTTP_READ_TIMEOUT_S")
    if op.rate_limited:
        add(429, "`rate_limited`: wait `Retry-After` seconds")
    add(429, "`too_many_connections`: this address holds too many open connections")
    for status, text in op.errors.items():
        add(status, text)
    return {status: "; ".join(texts) for status, texts in errors.items()}


def _error(status: int, text: str, envelope: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "description": text,
        "content": {"application/json": {"schema": envelope}},
    }
    names = {
        401: ("WWW-Authenticate",),
        429: (*_RATE_LIMIT_HEADERS, "Retry-After"),
        503: ("Retry-After",),
    }.get(status, ())
    if names:
        result["headers"] = {name: _header_ref(name) for name in names}
    return result


def _header_ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/headers/{name}"}
