"""GET /ws: the upgrade's admission checks, then one :class:`Session` per socket."""

from __future__ import annotations

from sanic import Blueprint, Request, Websocket

from coinlink.http.auth import Forbidden, client_ip
from coinlink.http.errors import ApiError
from coinlink.realtime.hub import Hub
from coinlink.realtime.inbound import Inbound, TokenBucket
from coinlink.realtime.session import Session
from config import Settings

bp = Blueprint("realtime")


class TooManyConnections(ApiError):
    status = 429
    code = "rate_limited"


class Draining(ApiError):
    status = 503
    code = "draining"


class UpgradeRequired(ApiError):
    status = 426
    code = "upgrade_required"


class BadHandshake(ApiError):
    status = 400
    code = "bad_request"


def _asks_to_upgrade(request: Request) -> bool:
    """``Connection: upgrade`` and ``Upgrade: websocket``, as websockets checks them."""
    connection = request.headers.get("connection", "")
    tokens = {token.strip().lower() for token in connection.split(",")}
    return "upgrade" in tokens and request.headers.get("upgrade", "").lower() == "websocket"


@bp.on_request
async def _admit(request: Request) -> None:
    """Refuse the upgrade (no WebSocket at all) on a stopping server, to a plain HTTP
    request, for a foreign Origin or from a crowded address."""
    if request.app.ctx.drain.draining:
        # Retried at once by a proxy (another instance answers), or by the client.
        raise Draining("this server is stopping; connect again", headers={"Retry-After": "1"})
    if not _asks_to_upgrade(request):
        raise UpgradeRequired(
            "/ws is a WebSocket endpoint: connect with a WebSocket client (ws:// or wss://)",
            headers={"Upgrade": "websocket"},
        )
    # websockets refuses header values beyond Latin-1 (a byte that is not UTF-8 arrives
    # as a surrogate) outside its own checks: Sanic would answer 500.
    unsendable = sorted(
        {name for name, value in request.headers.items() if max(value, default="") > "\xff"}
    )
    if unsendable:
        raise BadHandshake(
            f"header {', '.join(unsendable)} holds characters a WebSocket handshake cannot "
            "carry: send ASCII"
        )
    settings: Settings = request.app.ctx.settings
    origin = request.headers.get("origin")
    if origin is not None and origin not in settings.cors_origins:
        raise Forbidden(
            "this Origin may not open a WebSocket: the server allows the origins listed in "
            "COINLINK_CORS_ORIGINS"
        )
    hub: Hub = request.app.ctx.hub
    if hub.per_ip[client_ip(request)] >= settings.ws.max_connections_per_ip:
        raise TooManyConnections("too many WebSockets from this address")


@bp.signal("websocket.handler.before")  # type: ignore[untyped-decorator]
async def _take_frames(request: Request, websocket: Websocket) -> None:
    """The socket's frames go to its :class:`Inbound` from the first one: Sanic sends this
    signal in the same step as the 101 response (the handler only starts a step later,
    after the loop may have read the client's first frames)."""
    settings: Settings = request.app.ctx.settings
    bucket = TokenBucket(settings.ws.inbound_rate, settings.ws.inbound_burst)
    request.ctx.inbound = Inbound(websocket, bucket)


async def websocket(request: Request, ws: Websocket) -> None:
    hub: Hub = request.app.ctx.hub
    conn = hub.connect(ws, client_ip(request))
    ctx = request.app.ctx
    try:
        await Session(ctx.settings, hub, ctx.accounts, conn, request.ctx.inbound).run()
    finally:
        hub.remove(conn)


bp.add_websocket_route(websocket, "/ws")
