"""Operations routes: liveness, readiness and metrics."""

from __future__ import annotations

import time

from sanic import Blueprint, HTTPResponse, Request, json
from sanic_ext import openapi

from coinlink import __version__
from coinlink.observability.metrics import render
from coinlink.readiness import bus_check, database_check, ingest_check, run_checks

bp = Blueprint("health")
ADVISORY = frozenset({"ingest"})  # reported, but never makes this instance unready
_STARTED = time.monotonic()


@bp.get("/health")
@openapi.summary("Liveness: the process answers (touches no dependency)")
@openapi.tag("operations")
async def health(request: Request) -> HTTPResponse:
    return json(
        {"status": "ok", "version": __version__, "uptime_s": round(time.monotonic() - _STARTED)}
    )


@bp.get("/readyz")
@openapi.summary("Readiness: database and Redis answer within their deadline")
@openapi.tag("operations")
@openapi.response(200, description="ready")
@openapi.response(503, description="a check failed (see checks), or the server is stopping")
async def readyz(request: Request) -> HTTPResponse:
    if request.app.ctx.drain.draining:  # stopping: load balancers must route elsewhere
        return json({"status": "draining", "checks": {}}, status=503)
    settings = request.app.ctx.settings
    bus = request.app.ctx.bus
    checks = {
        "database": database_check,
        "redis": bus_check(bus),
        "ingest": ingest_check(
            bus, settings.staleness_s, name_leader=request.app.ctx.operators.granted(request)
        ),
    }
    ready, report = await run_checks(checks, settings.check_timeout_s, ADVISORY)
    return json(
        {"status": "ready" if ready else "unavailable", "checks": report},
        status=200 if ready else 503,
    )


@bp.get("/metrics")
@openapi.summary("Prometheus metrics of every worker process (bearer COINLINK_METRICS_TOKEN)")
@openapi.tag("operations")
async def metrics(request: Request) -> HTTPResponse:
    request.app.ctx.operators.require(request)
    body, content_type = render()
    return HTTPResponse(body, content_type=content_type)
