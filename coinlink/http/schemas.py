"""The response shapes every route shares: wire types, the error envelope and the page.

Routes' own response models (in their blueprints) are built from these, so the OpenAPI
document says exactly what :mod:`coinlink.wire` renders: decimals as exact strings, market
instants as epoch milliseconds (int64), record instants as ISO 8601 UTC.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

# decimal_str: no exponent, no needless trailing zeros, no "-0".
DecimalString = Annotated[
    str,
    Field(
        pattern=r"^-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$",
        description="an exact decimal, as a string",
        examples=["67012.5"],
    ),
]
EpochMillis = Annotated[
    int, Field(ge=0, description="epoch milliseconds (UTC)", json_schema_extra={"format": "int64"})
]
Count = Annotated[int, Field(ge=0)]

T = TypeVar("T")


class Reply(BaseModel):
    """Base of response models: they describe what the handlers render."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(Reply):
    code: str = Field(description="stable, machine-readable", examples=["validation_error"])
    message: str = Field(description="for humans: what is wrong and how to fix it")
    details: dict[str, Any] | None = Field(
        description="per code, e.g. `fields` (field path -> problem) for validation_error"
    )
    trace_id: str = Field(description="the request's X-Request-ID: quote it when reporting")


class ErrorEnvelope(Reply):
    """Every error, from every route."""

    error: ErrorBody


class Page(Reply, Generic[T]):
    """One page of a list: pass ``next_cursor`` back as ``cursor`` for the next one."""

    items: list[T]
    next_cursor: str | None = Field(description="null on the last page")


class Items(Reply, Generic[T]):
    """A complete list (not paged)."""

    items: list[T]
