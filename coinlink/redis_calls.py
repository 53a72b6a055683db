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
* :func:`connect`: the client a ``COINLINK_REDIS_URL`` names, one server (``redis://``,
  ``rediss://``, ``unix://``) or a Redis Cluster (``redis+cluster://``,
  ``rediss+cluster://``: any one node's address, the rest is discovered).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final
from urllib.parse import urlsplit

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from config.settings import REDIS_CLUSTER_SCHEMES

BACKEND_ERRORS: Final = (RedisError, OSError, TimeoutError)

Client = Redis | RedisCluster


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme in REDIS_CLUSTER_SCHEMES


def connect(url: str, **options: Any) -> Client:
    """A client of the server or cluster ``url`` names; ``options`` as for ``Redis``.

    Nothing is opened yet: connections (and the cluster's slot map) come with first use.
    """
    if is_cluster(url):
        return RedisCluster.from_url(node_url(url), **options)
    return Redis.from_url(url, **options)


def node_url(url: str, address: str | None = None) -> str:
    """A cluster URL as one node's own: ``redis://``, with ``address`` ("host:port") for
    the host and port when given; the credentials and options stay."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if address is not None:
        userinfo, at, _ = netloc.rpartition("@")
        netloc = userinfo + at + address
    return parts._replace(scheme=parts.scheme.removesuffix("+cluster"), netloc=netloc).geturl()


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


def raise_swallowed_cancel() -> None:
    """Raise ``CancelledError`` if this task was cancelled while a call swallowed it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
