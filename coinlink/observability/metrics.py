"""Prometheus metrics, correct across worker processes.

``coinlink serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before this
module is first imported; every worker then writes its samples to memory-mapped files and
``/metrics`` merges them. Without the variable (tests, one process) the default registry is
used. Gauges declare how they merge: ``livesum`` counts only live processes.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from coinlink.observability import multiprocess_values

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

if os.environ.get(MULTIPROC_DIR_ENV):
    multiprocess_values.install()  # before the first metric below

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests answered.", ["method", "route", "status"]
)
# Fine buckets between 50 and 300 ms resolve the p95 around the 150 ms objective.
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from request received to response ready.",
    ["method", "route"],
    buckets=(
        0.005,
        0.01,
        0.025,
        0.05,
        0.075,
        0.1,
        0.125,
        0.15,
        0.175,
        0.2,
        0.25,
        0.3,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
    ),
)
HTTP_IN_FLIGHT = Gauge(
    "http_requests_in_flight", "HTTP requests being served.", multiprocess_mode="livesum"
)

WS_CONNECTIONS = Gauge("ws_connections", "Open WebSocket connections.", multiprocess_mode="livesum")
WS_MESSAGES_SENT = Counter(
    "ws_messages_sent_total", "Messages handed to WebSocket clients (fan-out deliveries)."
)
WS_FANOUT_LATENCY = Histogram(
    "ws_fanout_latency_seconds",
    "From a message's publish on the bus to its hand-off to the last local subscriber.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
WS_CONFLATIONS = Counter(
    "ws_conflations_total", "Ticker updates replaced by a newer one for a lagging client."
)
WS_SLOW_CLOSES = Counter(
    "ws_slow_consumer_closes_total", "WebSockets closed (1013) for not keeping up."
)
WS_CLOSES = Counter("ws_closes_total", "WebSockets closed by the server, by close code.", ["code"])

# Multi-process mode has no process_* metrics: each worker reports its own (a `pid` label
# per live worker; a stopped worker's series end with it, see mark_worker_dead). CPU is the
# process's cumulative seconds, a gauge only because it is per pid: each pid's series only
# grows, so rate() over it is right, and a restarted worker is a new series, never a reset.
# (A counter incremented by deltas would be summed into one series over dead workers too:
# right for rate() as well, but it could not show which worker is busy.)
PROCESS_CPU = Gauge(
    "coinlink_process_cpu_seconds",
    "CPU time (user and system) this worker has used since it started.",
    multiprocess_mode="liveall",
)
PROCESS_MEMORY = Gauge(
    "coinlink_process_resident_memory_bytes",
    "Resident memory of this worker.",
    multiprocess_mode="liveall",
)
PROCESS_FDS = Gauge(
    "coinlink_process_open_fds",
    "Open file descriptors of this worker.",
    multiprocess_mode="liveall",
)

# What /readyz says, for Prometheus (which cannot call it): each worker runs the checks
# every few seconds (coinlink.readiness.watch); the lowest of the live workers.
READINESS = Gauge(
    "readiness_check_ok",
    "1 while a readiness check (database, redis) passes, 0 while it fails.",
    ["check"],
    multiprocess_mode="livemin",
)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_DIR_ENV))


def render() -> tuple[bytes, str]:
    """The exposition text of every live worker (or of this process alone)."""
    if multiprocess_enabled():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_worker_dead(pid: int) -> None:
    """Drop a stopped worker's live gauges (its counters stay in the totals)."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
