"""A plain Sanic app served on a real socket by the test's own event loop.

For tests of how CoinLink uses Sanic itself (its adapters to Sanic's internals), where a
whole ``coinlink serve`` would only add noise: the test adds the routes it needs and talks
to the server with a real client on the same loop.
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

from sanic import Sanic


def bare_app() -> Sanic[Any, Any]:
    """A Sanic app with nothing of CoinLink's (not even sanic-ext) and a unique name."""
    # As sanic-testing does: several apps start in one process, and outside test mode
    # Sanic rewrites its request handler in place at each start (TouchUp), from the
    # rewritten one after the first.
    Sanic.test_mode = True
    app = Sanic(f"bare_{uuid.uuid4().hex[:12]}", configure_logging=False)
    app.config.AUTO_EXTEND = False
    return app


@contextlib.asynccontextmanager
async def serving(app: Sanic[Any, Any]) -> AsyncIterator[int]:
    """Serve ``app`` on 127.0.0.1 while the block runs; yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    server = await app.create_server(sock=sock, return_asyncio_server=True)
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.start_serving()
    await server.after_start()
    try:
        yield port
    finally:
        await server.before_stop()
        server.close()
        await server.wait_closed()
        await server.after_stop()
