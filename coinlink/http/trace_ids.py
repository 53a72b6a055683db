"""Trace ids: the ``X-Request-ID`` a client sent when it is sane, else a fresh one."""

from __future__ import annotations

import os
import re
import threading

from sanic import Request

_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

# Fresh ids come from the OS's CSPRNG as ``secrets.token_hex(16)`` did, but 4 KiB at a
# time: one getrandom() system call per 256 ids instead of one per request (a trace id
# is made for almost every request; ~0.15 us instead of ~0.65 us).
_POOL_BYTES = 4096
_pool = b""
_used = 0
_lock = threading.Lock()  # the event loop makes ids, but a thread must not share one


def _forget_pool() -> None:
    # A forked child must not hand out the ids its parent holds.
    global _pool, _used
    _pool, _used = b"", 0


os.register_at_fork(after_in_child=_forget_pool)


def new_trace_id() -> str:
    """32 hex digits: 128 random bits, never handed out twice by a process."""
    global _pool, _used
    with _lock:
        if _used + 16 > len(_pool):
            _pool, _used = os.urandom(_POOL_BYTES), 0
        start = _used
        _used = start + 16
        chunk = _pool[start : start + 16]
    return chunk.hex()


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
