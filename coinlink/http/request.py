"""Parsing request bodies and query strings into pydantic models, with the contract's errors.

Malformed JSON is a 400 ``invalid_json``; anything that parses but does not fit the model is a
422 ``validation_error`` naming each bad field. Models forbid unknown fields, so read-only
fields such as ``is_admin`` can never be mass-assigned. Control characters other than tab,
newline and carriage return are refused in every string of every body: PostgreSQL cannot
store NUL, bcrypt refuses it, and none of them belongs in a name, an email or a URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)
from sanic import Request

from coinlink.accounts.emails import normalise_email
from coinlink.accounts.passwords import password_problem
from coinlink.http.errors import InvalidJson, RequestValidationError

M = TypeVar("M", bound=BaseModel)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _password(value: str) -> str:
    problem = password_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Email = Annotated[str, Field(max_length=254), AfterValidator(normalise_email)]
"""An email address, validated and normalised to lower case."""

# Never stripped: spaces are part of a password. Bytes are checked, not characters (bcrypt).
Password = Annotated[str, Field(json_schema_extra={"minLength": 8}), AfterValidator(_password)]
"""8 to 72 bytes of UTF-8."""

DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)]
"""A user's display name: trimmed, at most 64 characters."""


class Body(BaseModel):
    """Base of request bodies: unknown fields are errors (no mass assignment)."""

    model_config = ConfigDict(extra="forbid")


class Query(BaseModel):
    """Base of query-string models."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def parse_body(request: Request, model: type[M]) -> M:
    if not request.body:
        raise InvalidJson("a JSON object body is required")
    try:
        data = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"body is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise InvalidJson("body must be a JSON object")
    bad = dict(_control_characters(data, ""))
    if bad:
        raise RequestValidationError(bad)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError.from_pydantic(exc) from None


def _control_characters(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        if _CONTROL.search(value):
            yield path or "body", "must not contain control characters"
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _control_characters(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _control_characters(item, f"{path}.{index}" if path else str(index))


def parse_query(request: Request, model: type[M]) -> M:
    # A repeated parameter is ambiguous; the first value wins, as with most APIs.
    data = {key: values[0] for key, values in request.args.items()}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError.from_pydantic(exc) from None
