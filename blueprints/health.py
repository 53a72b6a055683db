"""Operations routes: liveness, readiness and metrics."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import ConfigDict, Field
from sanic import Blueprint, HTTPResponse, Request, json

from coinlink import __version__
from coinlink.http.contract import Reply, operation
from coinlink.http.schemas import Reply as Model
from coinlink.observability.metrics import render
from coinlink.readiness import bus_check, database_check, ingest_check, run_checks

bp = Blueprint("health")
ADVISORY = frozenset({"ingest"})  # reported, but never makes this instance unready
_STARTED = time.monotonic()


class Health(Model):
    status: Literal["ok"]
    version: str
    uptime_s: int = Field(ge=0)


class Check(Model):
    """One dependency's check; checks add their own fields (``backend``, ``lag_s``, ...)."""

    model_config = ConfigDict(extra="allow")
    status: Literal["ok", "warn", "fail"]
    latency_ms: float = Field(ge=0)
    error: str | None = None


class Readiness(Model):
    status: Literal["ready", "unavailable", "draining"]
    checks: dict[str, Check]


METRICS_ACCESS: dict[int, str] = {
    401: "`unauthorized`: send the bearer token set in COINLINK_METRICS_TOKEN",
    404: "`not_found`: off in production until COINLINK_METRICS_TOKEN is set",
}
_PROBE: dict[str, Any] = {"tag": "operations", "rate_limited": False}


@bp.get("/health")
@operation(
    summary="Liveness: the process answers (touches no dependency)",
    replies={200: Reply("alive", Health)},
    **_PROBE,
)
async def health(request: Request) -> HTTPResponse:
    return json(
        {"status": "ok", "version": __version__, "uptime_s": round(time.monotonic() - _STARTED)}
    )


@bp.get("/readyz")
@operation(
    summary="Readiness: database and Redis answer within their deadline",
    replies={
        200: Reply("ready", Readiness),
        503: Reply("a check failed (see checks), or the server is stopping", Readiness),
    },
    **_PROBE,
)
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
@operation(
    summary="Prometheus metrics of every worker process (bearer COINLINK_METRICS_TOKEN)",
    replies={200: Reply("the Prometheus text format", media_type="text/plain")},
    errors=METRICS_ACCESS,
    **_PROBE,
)
async def metrics(request: Request) -> HTTPResponse:
    request.app.ctx.operators.require(request)
    body, content_type = render()
    return HTTPResponse(body, content_type=content_type)
