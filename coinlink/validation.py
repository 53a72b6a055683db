"""Parsing request bodies and query strings into pydantic models, with the contract's errors.

Malformed JSON is a 400 ``invalid_json``; anything that parses but does not fit the model is a
422 ``validation_error`` naming each bad field. Models forbid unknown fields, so read-only
fields such as ``is_admin`` can never be mass-assigned.
"""

from __future__ import annotations

from typing import TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError
from sanic import Request

from coinlink.errors import InvalidJson, RequestValidationError

M = TypeVar("M", bound=BaseModel)


class Body(BaseModel):
    """Base of request bodies: unknown fields are errors, strings are stripped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


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
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError.from_pydantic(exc) from None


def parse_query(request: Request, model: type[M]) -> M:
    # A repeated parameter is ambiguous; the first value wins, as with most APIs.
    data = {key: values[0] for key, values in request.args.items()}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError.from_pydantic(exc) from None
