"""Trace ids: the ``X-Request-ID`` a client sent when it is sane, else a fresh one."""

from __future__ import annotations

import re
import secrets

from sanic import Request

_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def new_trace_id() -> str:
    """32 hex digits: 128 random bits from the OS's CSPRNG."""
    # Not Sanic's request.id: it costs twice as much (a uuid4 drawn even when the client
    # sent an id) and echoes any client value unchecked (docs/performance.md).
    return secrets.token_hex(16)


def trace_id_for(header: str | None) -> str:
    """Echo a client's id of at most 128 ``[A-Za-z0-9._-]`` characters; otherwise make one."""
    if header and _SANE_ID.fullmatch(header):
        return header
    return new_trace_id()


def trace_id_of(request: Request | None) -> str:
    """The request's trace id, assigning one if middleware has not run (early errors)."""
    if request is None:
        return new_trace_id()
    trace_id: str | None = getattr(request.ctx, "trace_id", None)
    if trace_id is None:
        trace_id = request.ctx.trace_id = trace_id_for(request.headers.get("x-request-id"))
    return trace_id
