"""GET /docs/asyncapi.json: the AsyncAPI document of ``/ws`` (registered only when
``COINLINK_DOCS_ENABLED`` holds, like ``/docs/openapi.json``)."""

from __future__ import annotations

from typing import Any

import orjson
from sanic import Blueprint, HTTPResponse, Request, Sanic
from sanic_ext import openapi

from coinlink.realtime.asyncapi import document

bp = Blueprint("docs_asyncapi")


@bp.before_server_start
async def _build(app: Sanic[Any, Any]) -> None:
    # The same bytes for every request: the document depends only on the settings.
    app.ctx.asyncapi_json = orjson.dumps(document(app.ctx.settings))


@bp.get("/docs/asyncapi.json")
@openapi.exclude()
async def asyncapi_json(request: Request) -> HTTPResponse:
    return HTTPResponse(request.app.ctx.asyncapi_json, content_type="application/json")
