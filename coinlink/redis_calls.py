"""What every Redis call of ours shares, whichever client makes it (the bus, the limiter).

* :data:`BACKEND_ERRORS`: redis-py wraps socket failures in ``RedisError``, but a few paths
  (and ``asyncio.timeout``) raise the builtin ones; all three mean "Redis did not answer".
* :func:`raise_swallowed_cancel`: redis-py 8 sends each command through
  ``asyncio.wait_for`` when a socket timeout is set, and on Python 3.11 ``wait_for``
  returns the result of a command that finished in the same loop turn as a cancellation,
  dropping the ``CancelledError`` (fixed in Python 3.12). The task's cancel request is still
  counted, so after every Redis call we raise it ourselves: without this a worker's ingest
  task ignored its shutdown and held the leader lease
  (``tests/integration/test_redis_cancellation.py`` shows the library's behaviour and the cure).
"""

from __future__ import annotations

import asyncio
from typing import Final

from redis.exceptions import RedisError

BACKEND_ERRORS: Final = (RedisError, OSError, TimeoutError)


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


def raise_swallowed_cancel() -> None:
    """Raise ``CancelledError`` if this task was cancelled while a call swallowed it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
