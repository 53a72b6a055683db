"""/docs: the API's documents and their reference page (only with COINLINK_DOCS_ENABLED).

The OpenAPI document is built from the routes' declarations on the first request (every
route is registered by then) and kept for the worker's life; the AsyncAPI document of
``/ws`` depends only on the settings.
"""

from __future__ import annotations

from typing import Any

import orjson
from sanic import Blueprint, HTTPResponse, Request, Sanic, html

from coinlink import __version__
from coinlink.http import docs_page
from coinlink.http.openapi import DOCS_PREFIX, document
from coinlink.realtime import asyncapi

bp = Blueprint("docs", url_prefix=DOCS_PREFIX)

DESCRIPTION = (
    "Real-time crypto market data and price alerts. Every error has the shape "
    '`{"error": {"code", "message", "details", "trace_id"}}`. Prices and other decimals '
    "are exact decimal strings; market times (`ts`, candle times) are epoch milliseconds; "
    "record times are ISO 8601 UTC. The WebSocket API at `/ws` has its own document, "
    "`/docs/asyncapi.json` (AsyncAPI 3.0)."
)


def openapi(request: Request) -> dict[str, Any]:
    """The application's OpenAPI document (built once per worker)."""
    built: dict[str, Any] | None = getattr(request.app.ctx, "openapi", None)
    if built is None:
        built = request.app.ctx.openapi = document(
            request.app, version=__version__, description=DESCRIPTION
        )
    return built


@bp.before_server_start
async def _build_asyncapi(app: Sanic[Any, Any]) -> None:
    app.ctx.asyncapi = asyncapi.document(app.ctx.settings)
    app.ctx.asyncapi_json = orjson.dumps(app.ctx.asyncapi)


@bp.get("/openapi.json")
async def openapi_json(request: Request) -> HTTPResponse:
    return HTTPResponse(orjson.dumps(openapi(request)), content_type="application/json")


@bp.get("/asyncapi.json")
async def asyncapi_json(request: Request) -> HTTPResponse:
    return HTTPResponse(request.app.ctx.asyncapi_json, content_type="application/json")


@bp.get("")
async def reference(request: Request) -> HTTPResponse:
    return html(docs_page.render(openapi(request), request.app.ctx.asyncapi))
