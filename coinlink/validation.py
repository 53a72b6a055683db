"""Parsing request bodies and query strings into pydantic models, with the contract's errors.

Malformed JSON is a 400 ``invalid_json``; anything that parses but does not fit the model is a
422 ``validation_error`` naming each bad field. Models forbid unknown fields, so read-only
fields such as ``is_admin`` can never be mass-assigned.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import orjson
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from sanic import Request

from coinlink.errors import InvalidJson, RequestValidationError
from coinlink.passwords import password_problem

M = TypeVar("M", bound=BaseModel)


def _email(value: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


def _password(value: str) -> str:
    problem = password_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Email = Annotated[str, Field(max_length=254), AfterValidator(_email)]
"""An email address, validated and normalised to lower case."""

# Never stripped: spaces are part of a password. Bytes are checked, not characters (bcrypt).
Password = Annotated[str, Field(json_schema_extra={"minLength": 8}), AfterValidator(_password)]
"""8 to 72 bytes of UTF-8."""


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


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of ``model`` (sanic-ext does not derive it from pydantic)."""
    return {"application/json": model.model_json_schema()}
