"""GET /ws: the upgrade's admission checks, then one :class:`Session` per socket."""

from __future__ import annotations

from sanic import Blueprint, Request, Websocket
from websockets.exceptions import ConnectionClosed

from coinlink.http.auth import Forbidden, client_ip
from coinlink.http.errors import ApiError
from coinlink.realtime.hub import Hub
from coinlink.realtime.session import Session
from config import Settings

bp = Blueprint("realtime")


class TooManyConnections(ApiError):
    status = 429
    code = "rate_limited"


class Draining(ApiError):
    status = 503
    code = "draining"


@bp.on_request
async def _admit(request: Request) -> None:
    """Refuse the upgrade (no WebSocket at all) on a stopping server, for a foreign Origin
    or from a crowded address."""
    if request.app.ctx.drain.draining:
        # Retried at once by a proxy (another instance answers), or by the client.
        raise Draining("this server is stopping; connect again", headers={"Retry-After": "1"})
    settings: Settings = request.app.ctx.settings
    origin = request.headers.get("origin")
    if origin is not None and origin not in settings.cors_origins:
        raise Forbidden("this Origin may not open a WebSocket")
    hub: Hub = request.app.ctx.hub
    if hub.per_ip[client_ip(request)] >= settings.ws.max_connections_per_ip:
        raise TooManyConnections("too many WebSockets from this address")


async def websocket(request: Request, ws: Websocket) -> None:
    hub: Hub = request.app.ctx.hub
    conn = hub.connect(ws, client_ip(request))
    try:
        await Session(request.app.ctx.settings, hub, request.app.ctx.accounts, conn).run()
    except ConnectionClosed:
        pass
    finally:
        hub.remove(conn)


bp.add_websocket_route(websocket, "/ws")
