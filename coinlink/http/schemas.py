"""The response shapes every route shares: wire types, the error envelope and the page.

Routes' own response models (in their blueprints) are built from these, so the OpenAPI
document says exactly what :mod:`coinlink.wire` renders: decimals as exact strings, market
instants as epoch milliseconds (int64), record instants as ISO 8601 UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
)
from pydantic_core import core_schema

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


EARLIEST_MS = 10**12
"""2001-09-09 in epoch milliseconds: any earlier request time is taken for seconds. A time
in seconds (``1700000000``) read as milliseconds is a day in January 1970, an empty answer
without a word; no market data here is that old."""
LATEST_MS = 10**14  # the year 5138


def _milliseconds(value: int) -> int:
    if value < EARLIEST_MS:
        hint = f" ({value * 1000} if {value} is in seconds)" if value >= 10**9 else ""
        raise ValueError(f"must be epoch milliseconds, at least {EARLIEST_MS} (2001-09-09){hint}")
    return value


RequestMillis = Annotated[
    int,
    Field(le=LATEST_MS, json_schema_extra={"format": "int64", "minimum": EARLIEST_MS}),
    AfterValidator(_milliseconds),
]
"""A request's time in epoch milliseconds, 2001-09-09 to the year 5138 (``minimum`` in the
schema; the validator's message says *milliseconds*, which pydantic's ``ge`` would not)."""


def epoch_ms_parameter(description: str) -> Any:
    """The default and description of an optional :data:`RequestMillis`."""
    return Field(default=None, description=description)


def _no_default(schema: dict[str, Any]) -> None:
    del schema["default"]


def unchanged() -> Any:
    """The default of a field a change may leave out (``None``: not changed). The schema
    shows no default, and its type has no null: sending null is an error."""
    return Field(default=None, json_schema_extra=_no_default)


def decimal_pattern(digits: int, places: int, *, positive: bool) -> str:
    """The regular expression of a plain decimal below ``10**digits`` with at most ``places``
    decimals (no sign, exponent or leading zeros), above zero when ``positive``."""
    fraction = rf"(?:\.[0-9]{{1,{places}}})?"
    whole = rf"[1-9][0-9]{{0,{digits - 1}}}{fraction}"
    if not positive:
        return rf"^(?:0{fraction}|{whole})$"
    # Below one: some digit of the fraction is not zero.
    small = "|".join(rf"0{{{k}}}[1-9][0-9]{{0,{places - 1 - k}}}" for k in range(places))
    return rf"^(?:{whole}|0\.(?:{small}))$"


@dataclass(frozen=True, slots=True)
class DecimalText:
    """``Annotated[Decimal, DecimalText(...)]``: a request's decimal, a JSON string matching
    ``pattern`` (the contract's decimal strings; never a JSON number, which a client's float
    may already have rounded). The pattern is the whole rule, so the schema says it all."""

    pattern: str
    description: str

    def check(self, value: object) -> Decimal:
        if not isinstance(value, str) or not re.fullmatch(self.pattern, value):
            raise ValueError(f"must be a decimal string: {self.description}")
        return Decimal(value)

    def __get_pydantic_core_schema__(
        self, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return {"type": "string", "pattern": self.pattern, "description": self.description}
