"""The contract's lists: ``{"items": [...], "next_cursor": ...}`` with ``?limit=&cursor=``.

A cursor is the sort key of the last item returned, as URL-safe base64 of JSON: opaque to
clients, tamper-evident enough (a bad one is a 422, never a 500 or a wrong page).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson
from pydantic import Field

from coinlink.http.errors import RequestValidationError
from coinlink.http.request import Query

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_CURSOR_TEXT = 64


class PageQuery(Query):
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    cursor: str | None = Field(default=None, max_length=512)


def encode_cursor(*key: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def decode_cursor(cursor: str, *kinds: type[int] | type[str]) -> list[Any]:
    """The key a cursor holds, one element of each of ``kinds`` (an int fits a BIGINT, a
    str is short), or 422 ``cursor`` when it is not one of ours."""
    try:
        key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        key = None
    if not (
        isinstance(key, list)
        and len(key) == len(kinds)
        and all(_fits(item, kind) for item, kind in zip(key, kinds, strict=True))
    ):
        raise RequestValidationError({"cursor": "is not a cursor this list gave out"})
    return key


def _fits(item: Any, kind: type[int] | type[str]) -> bool:
    # type(), not isinstance: a bool is an int to Python, never in one of our cursors.
    if kind is int:
        return type(item) is int and _INT64_MIN <= item <= _INT64_MAX
    return type(item) is str and len(item) <= _MAX_CURSOR_TEXT


def page(
    rows: Sequence[T],
    limit: int,
    key: Callable[[T], Sequence[Any]],
    render: Callable[[T], dict[str, Any]],
) -> dict[str, Any]:
    """The page of ``rows`` (fetched as ``limit + 1``: the extra one only says "more")."""
    shown = rows[:limit]
    more = len(rows) > limit
    return {
        "items": [render(row) for row in shown],
        "next_cursor": encode_cursor(*key(shown[-1])) if more else None,
    }
