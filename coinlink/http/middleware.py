"""HTTP middleware: trace id, security headers, metrics and the access log.

Two small hooks instead of a chain, because every request pays for them (``bench/http.py``
measures the cost against a bare Sanic app). CORS comes from sanic-ext and the body limit
from Sanic's ``REQUEST_MAX_SIZE``; both errors go through the envelope handler.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from time import perf_counter
from typing import TYPE_CHECKING, Any

from sanic import Request, Sanic
from sanic.response import BaseHTTPResponse

from coinlink.http import header_encoding
from coinlink.http.trace_ids import trace_id_for, trace_id_of
from coinlink.observability import logging as obs_logging
from coinlink.observability.logging import bind_request_context
from coinlink.observability.metrics import HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS
from coinlink.observability.multiprocess_values import HeldObservations

if TYPE_CHECKING:
    from coinlink.serving.drain import Drain

API_CSP = "default-src 'none'; frame-ancestors 'none'"
# The docs page is server-rendered HTML with an inline style sheet and no script at all.
DOCS_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
UNMATCHED_ROUTE = "<unmatched>"
# Probes answer every few seconds for every load balancer and scraper: counted in the
# metrics, kept out of the access log (they would drown it, at several us of CPU a line).
QUIET_ROUTES = frozenset({"/health", "/readyz", "/metrics"})


def security_headers(production: bool) -> dict[str, str]:
    headers = {
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": API_CSP,
        # CORS headers depend on the request's Origin (none without one): a cache must
        # not hand one Origin's response to another.
        "Vary": "Origin",
    }
    if production:
        headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
    return headers


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@lru_cache(maxsize=4096)
def _request_metrics(method: str, route: str, status: int) -> tuple[Any, Any]:
    """The labelled children, looked up once: ``labels()`` costs more than the sample."""
    method = method if method in _METHODS else "OTHER"  # a client picks the method
    return (
        HTTP_REQUESTS.labels(method, route, str(status)),
        HTTP_DURATION.labels(method, route),
    )


class _BatchedCounts:
    """The in-flight gauge, the request counters and the duration histogram, written once
    per event-loop turn.

    In multi-process mode every Prometheus sample is a locked write to a memory-mapped
    file (~0.7 us, more on a busy worker): the gauge's inc and dec, the counter and the
    histogram's sum and bucket were five writes per request. Here a request only changes
    Python numbers; one callback per loop turn (``call_soon``, before the loop reads more
    sockets) adds what changed. Under load one turn serves many requests, so the writes are
    shared; a scrape sees every request at most one loop turn late, never lost or miscounted
    (a request begun and answered within one turn, which no other request could observe in
    flight, nets to nothing: a scrape no longer counts itself as in flight). Deltas rather
    than ``set``: several apps may share one registry.
    """

    __slots__ = ("_counts", "_durations", "_flush_on", "_in_flight")

    def __init__(self) -> None:
        self._in_flight = 0  # not yet added to HTTP_IN_FLIGHT
        self._counts: dict[Any, int] = {}  # counter child -> requests not yet added
        self._durations: dict[Any, HeldObservations] = {}  # histogram child -> its held
        # The loop due to flush them. Not "a flush is pending": a loop stopped with its
        # flush pending (an app served by one loop, then another) would hold every later count.
        self._flush_on: asyncio.AbstractEventLoop | None = None

    def started(self) -> None:
        self._in_flight += 1
        self._schedule()

    def finished(self, requests: Any, duration: Any, seconds: float) -> None:
        self._in_flight -= 1
        counts = self._counts
        counts[requests] = counts.get(requests, 0) + 1
        held = self._durations.get(duration)
        if held is None:
            held = self._durations[duration] = HeldObservations(duration)
        held.add(seconds)
        self._schedule()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        if self._flush_on is not loop:
            self._flush_on = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_on = None
        if self._in_flight:
            HTTP_IN_FLIGHT.inc(self._in_flight)
            self._in_flight = 0
        counts, self._counts = self._counts, {}
        for requests, count in counts.items():
            requests.inc(count)
        durations, self._durations = self._durations, {}
        for held in durations.values():
            held.write()


def route_label(request: Request) -> str:
    """The route template, never the raw path: raw paths would explode metric cardinality."""
    route = request.route
    return "/" + route.path if route is not None else UNMATCHED_ROUTE


def install(
    app: Sanic[Any, Any], *, production: bool, access_log_enabled: bool, drain: Drain
) -> None:
    header_encoding.install()
    base_headers = security_headers(production)
    counts = _BatchedCounts()

    async def begin(request: Request) -> None:
        trace_id = request.ctx.trace_id = trace_id_for(request.headers.get("x-request-id"))
        request.ctx.started = perf_counter()
        bind_request_context(trace_id=trace_id)
        counts.started()
        if getattr(request.stream, "request_body", None):
            # A body Sanic left unread (a GET's, which means nothing): read and ignored, or
            # Sanic logs "body not consumed" at error level after a 2xx.
            await request.receive_body()  # type: ignore[no-untyped-call]

    async def finish(request: Request, response: BaseHTTPResponse) -> None:
        headers = response.headers
        headers.update(base_headers)
        if request.path.startswith("/docs"):
            headers["Content-Security-Policy"] = DOCS_CSP
        if "authorization" in request.headers:
            headers["Cache-Control"] = "no-store"
        headers["X-Request-ID"] = trace_id_of(request)
        if drain.draining:
            # A draining server closes each connection after its response: a proxy's or
            # client's next request opens a new one, which goes to another instance.
            request.stream.keep_alive = False  # type: ignore[union-attr]

        started: float | None = getattr(request.ctx, "started", None)
        if started is None:  # failed before the request hook (a 413 while reading, say)
            return
        elapsed = perf_counter() - started
        route = route_label(request)
        requests, duration = _request_metrics(request.method, route, response.status)
        counts.finished(requests, duration, elapsed)
        if access_log_enabled and route not in QUIET_ROUTES:
            obs_logging.access(
                request.method,
                request.path,
                route,
                response.status,
                round(elapsed * 1000, 2),
            )

    app.register_middleware(begin, "request", priority=1000)
    app.register_middleware(finish, "response", priority=1000)
