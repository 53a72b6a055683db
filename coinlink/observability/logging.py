"""structlog set-up: JSON lines (or a readable console) for our loggers and the stdlib's.

Request-scoped values (the trace id) live in ONE context variable that the HTTP middleware
replaces at the start of every request: Sanic serves keep-alive requests in one task, so a
value bound for one request would otherwise leak into the next. One variable rather than
structlog's per-key contextvars, whose merge copies and scans the whole context on every
log call: in a worker that doubled the cost of the access-log line.

The access-log line (one per non-probe request) skips structlog in the JSON format:
:func:`access` builds the very line structlog's processor chain would (same keys, same
order, same rendering; a test compares them) as one dict, renders it with orjson and writes
it, in ~2.5 us instead of ~6.5 us. The lines of one turn of the event loop are written
together when it ends, in writes of at most ``PIPE_BUF`` bytes cut between lines (a few
``write`` system calls for all the requests a busy worker answered in that turn, instead of
one each, and no line torn by another worker's in a shared pipe). The console format and
an unconfigured process keep structlog's path.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import select
import sys
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, BinaryIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

SENSITIVE_KEYS = frozenset(
    {
        "password",
        "new_password",
        "current_password",
        "token",
        "access_token",
        "refresh_token",
        "authorization",
        "secret",
        "jwt_secret",
        "cookie",
    }
)


_REQUEST_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar(
    "coinlink_request_context", default=None
)


def bind_request_context(**values: Any) -> None:
    """Replace the request-scoped log values (a new request starts from nothing)."""
    _REQUEST_CONTEXT.set(values)


ACCESS_LOGGER = "coinlink.access"
AccessLog = Callable[[str, str, str, int, float], None]


class _AccessLine:
    """Writes the access-log JSON lines directly, a loop turn's together; see the module
    docstring."""

    __slots__ = ("flush_on", "pending", "pid", "stream")

    def __init__(self, stream: BinaryIO, pid: int) -> None:
        self.stream = stream
        self.pid = pid
        self.pending: list[bytes] = []  # this loop turn's lines
        self.flush_on: asyncio.AbstractEventLoop | None = None  # the loop due to flush them

    def __call__(self, method: str, path: str, route: str, status: int, duration_ms: float) -> None:
        # The order structlog produces: the call's keywords, "event", then what the
        # processors add (logger, request context, level, timestamp, pid).
        event: dict[str, Any] = {
            "method": method,
            "path": path,
            "route": route,
            "status": status,
            "duration_ms": duration_ms,
            "event": "request",
            "logger": ACCESS_LOGGER,
        }
        values = _REQUEST_CONTEXT.get()
        if values:
            for key, value in values.items():
                event.setdefault(key, value)
        event["level"] = "info"
        event["timestamp"] = datetime.now(UTC)
        event["pid"] = self.pid
        if not SENSITIVE_KEYS.isdisjoint(event):  # only a request context could add one
            _redact(None, "info", event)
        self.pending.append(_dumps(event, option=orjson.OPT_APPEND_NEWLINE))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to wait for: now
            self.flush()
            return
        # Not "when the first line came": a loop stopped with its flush pending would
        # hold every later line.
        if self.flush_on is not loop:
            self.flush_on = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write (and flush) the lines held: at the end of the loop's turn, and at exit.

        In writes of at most ``PIPE_BUF`` bytes, cut between lines: workers share the
        container's stdout pipe, which keeps only such writes whole.
        """
        self.flush_on = None
        lines, self.pending = self.pending, []
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            if chunk and size + len(line) > select.PIPE_BUF:
                self.stream.write(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            self.stream.write(b"".join(chunk))
            self.stream.flush()


def _flush_access_lines() -> None:
    """At exit: the lines of a turn the loop never finished."""
    if isinstance(_access, _AccessLine):
        _access.flush()


atexit.register(_flush_access_lines)


def _via_structlog(logger: Any) -> AccessLog:
    def access(method: str, path: str, route: str, status: int, duration_ms: float) -> None:
        logger.info(
            "request",
            method=method,
            path=path,
            route=route,
            status=status,
            duration_ms=duration_ms,
        )

    return access


def _no_access(method: str, path: str, route: str, status: int, duration_ms: float) -> None:
    """The access log's level is filtered out: nothing to do."""


# Replaced by configure_logging() in each worker: the direct JSON writer (or nothing when
# info is filtered out); structlog's path for the console format and until configured.
_access: AccessLog = _via_structlog(structlog.get_logger(logger_name=ACCESS_LOGGER))


def access(method: str, path: str, route: str, status: int, duration_ms: float) -> None:
    """Log one request at info on ``coinlink.access`` (message ``request``)."""
    _access(method, path, route, status, duration_ms)


def _merge_request_context(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    values = _REQUEST_CONTEXT.get()
    if values:
        for key, value in values.items():
            event.setdefault(key, value)
    return event


def _stamper(pid: int) -> Processor:
    def stamp(_: WrappedLogger, method_name: str, event: EventDict) -> EventDict:
        """Level, time and pid in one step (the access log runs this on every request).

        The time stays a ``datetime``: orjson renders it as ISO 8601 with ``Z`` faster
        than ``isoformat()``; the console renderer formats it itself.
        """
        event["level"] = "warning" if method_name == "warn" else method_name
        event["timestamp"] = datetime.now(UTC)
        event["pid"] = pid
        return event

    return stamp


def _redact(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Last line of defence: a sensitive key never reaches the output, whoever logged it."""
    for key in SENSITIVE_KEYS.intersection(event):
        event[key] = "[redacted]"
    return event


def _dumps(obj: Any, default: Any = None, option: int = 0) -> bytes:
    try:
        return orjson.dumps(obj, default=default or str, option=orjson.OPT_UTC_Z | option)
    except orjson.JSONEncodeError:
        # Text that is not UTF-8 (request bytes Sanic decoded to surrogates, quoted in an
        # exception) made the line unwritable and the logging call raise: escape it.
        return orjson.dumps(_escaped(obj), default=default or str, option=orjson.OPT_UTC_Z | option)


def _escaped(obj: Any) -> Any:
    if isinstance(obj, str):
        return obj.encode(errors="backslashreplace").decode()
    if isinstance(obj, dict):
        return {_escaped(key): _escaped(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_escaped(value) for value in obj]
    return obj


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Configure structlog and route the stdlib's loggers (Sanic, Tortoise) through it.

    Our own loggers (``structlog.get_logger(logger_name="coinlink.x")``) take structlog's
    native path straight to stdout: the access log runs on every request, and the stdlib's
    handler machinery would cost a third of the throughput. Stdlib records are rendered by
    the same processors through ``ProcessorFormatter``.
    """
    global _access
    # Configured in each worker, so the pid is the worker's own.
    pid = os.getpid()
    stamp = _stamper(pid)
    shared: list[Processor] = [_merge_request_context, stamp, _redact]
    renderer: Processor
    if fmt == "json":
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
        factory: Any = structlog.BytesLoggerFactory(sys.stdout.buffer)
        stdlib_renderer: Processor = structlog.processors.JSONRenderer(
            serializer=lambda obj, default=None: _dumps(obj, default).decode()
        )
    else:
        renderer = stdlib_renderer = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
        factory = structlog.WriteLoggerFactory(sys.stdout)

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                stdlib_renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("sanic.root", "sanic.error", "sanic.server", "tortoise"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("sanic.access").disabled = True  # our middleware logs requests
    # Tortoise narrates every start and stop at info, twice, with object reprs.
    logging.getLogger("tortoise").setLevel(max(root.level, logging.WARNING))

    min_level = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[_name_logger, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    if min_level > logging.INFO:
        _access = _no_access
    elif fmt == "json":
        _access = _AccessLine(sys.stdout.buffer, pid)
    else:  # a logger bound after this configuration (structlog caches on first use)
        _access = _via_structlog(structlog.get_logger(logger_name=ACCESS_LOGGER))


def _name_logger(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    # ``logger`` itself cannot be an initial value of get_logger(); stdlib records use it.
    if "logger_name" in event:
        event["logger"] = event.pop("logger_name")
    return event
