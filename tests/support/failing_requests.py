"""``python -m tests.support.failing_requests serve ...``: ``coinlink serve`` whose requests
fail unexpectedly on demand. Fault injection through the app factory, not the settings.

- A request carrying :data:`FAULT_HEADER` raises :class:`InjectedFault` inside the account
  service when its handler calls it (register, login, refresh, the access check of every
  signed-in route): a bug deep in a real route, with the caller's credentials in the frames
  below it.
- :data:`SLOW_ROUTE` answers only after far longer than any test waits: a client can hang
  up on it mid-request.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from sanic import HTTPResponse, Request, Sanic, empty

from coinlink import app, cli

MODULE = "tests.support.failing_requests"
FAULT_HEADER = "x-test-fault"
SLOW_ROUTE = "/_test/slow"
FAILING_CALLS = ("register", "login", "refresh", "check_access")
SLOW_STARTED = "slow_request_started"

log = structlog.get_logger(logger_name=MODULE)


class InjectedFault(RuntimeError):
    """The unexpected error a request asked for."""


def _failing_on_demand(call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def call_or_fail(*args: Any, **kwargs: Any) -> Any:
        if FAULT_HEADER in Request.get_current().headers:
            raise InjectedFault("injected fault")
        return await call(*args, **kwargs)

    return call_or_fail


async def _inject_faults(app: Sanic[Any, Any]) -> None:
    # After the app's own start-up listener, which created the service.
    for name in FAILING_CALLS:
        setattr(app.ctx.accounts, name, _failing_on_demand(getattr(app.ctx.accounts, name)))


async def _slow(request: Request) -> HTTPResponse:
    log.info(SLOW_STARTED)  # the client may hang up now: its request is in the handler
    await asyncio.sleep(600)
    return empty()


def create_app() -> Sanic[Any, Any]:
    """Called by Sanic in the main process and in each worker."""
    coinlink_app = app.create_app()
    coinlink_app.before_server_start(_inject_faults)
    coinlink_app.add_route(_slow, SLOW_ROUTE)
    return coinlink_app


if __name__ == "__main__":
    # Imported by its own name, so that workers find the factory (``__main__`` is not it).
    from tests.support import failing_requests

    sys.exit(cli.main(sys.argv[1:], app_factory=failing_requests.create_app))
