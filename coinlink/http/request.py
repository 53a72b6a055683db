"""Parsing request bodies and query strings into pydantic models, with the contract's errors.

A body sent as another media type than JSON, or compressed, is a 415
``unsupported_media_type`` (a body without a ``Content-Type`` is read as JSON: HTTP clients
of scripts often send none).
Malformed JSON is a 400 ``invalid_json``; anything that parses but does not fit the model
is a 422 ``validation_error`` naming each bad field. Models forbid unknown fields, so read-only
fields such as ``is_admin`` can never be mass-assigned. Control characters other than tab,
newline and carriage return are refused in every string of every body: PostgreSQL cannot
store NUL, bcrypt refuses it, and none of them belongs in a name, an email or a URL.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable
from functools import cache
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    ValidationError,
)
from sanic import Request

from coinlink.accounts.emails import normalise_email
from coinlink.accounts.passwords import password_problem
from coinlink.http.errors import ApiError, InvalidJson, RequestValidationError

M = TypeVar("M", bound=BaseModel)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_DEPTH = 32
_JSON_MEDIA_TYPE = re.compile(r"application/(?:[\w.-]+\+)?json")
NO_CONTROL_CHARACTERS = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]*$"
"""The same rule as a JSON Schema pattern (for the OpenAPI document)."""


def _password(value: str) -> str:
    problem = password_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Email = Annotated[
    str,
    Field(max_length=254, json_schema_extra={"format": "email"}),
    AfterValidator(normalise_email),
]
"""An email address, validated and normalised to lower case."""

# Never stripped: spaces are part of a password. Bytes are checked, not characters (bcrypt).
Password = Annotated[
    str, Field(json_schema_extra={"minLength": 8, "maxLength": 72}), AfterValidator(_password)
]
"""8 to 72 bytes of UTF-8."""

DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)]
"""A user's display name: trimmed, at most 64 characters."""


class Body(BaseModel):
    """Base of request bodies: unknown fields are errors (no mass assignment), and values
    are of their JSON type (strict: no ``"600"`` for 600, no ``0`` or ``"yes"`` for true).

    ``cache_strings=False``: pydantic-core otherwise keeps the short strings it builds
    (here: values it strips) in a process-wide cache of 16,384 entries, so a worker held
    users' notes and names it had validated, filling ~1 MiB over an hour of a soak's
    alert changes (docs/performance.md, "The quiet hour")."""

    model_config = ConfigDict(extra="forbid", strict=True, cache_strings=False)


def _query_boolean(value: object) -> object:
    if value in ("true", "false"):
        return value == "true"
    if isinstance(value, str):  # not "yes", "on", "1"...: one spelling, as the document's
        raise ValueError("must be true or false")
    return value


QueryBool = Annotated[bool, BeforeValidator(_query_boolean)]
"""A query-string boolean: exactly ``true`` or ``false`` (how OpenAPI serialises one)."""


class Query(BaseModel):
    """Base of query-string models: unknown parameters are errors (a typo is never silently
    ignored), except ``_``, the cache buster jQuery and others append (``?_=1733480000000``),
    which is accepted and ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, cache_strings=False)

    cache_buster: str | None = Field(
        default=None,
        alias="_",
        description="ignored: a cache buster such as jQuery's `_=<timestamp>`",
    )


def parse_body(request: Request, model: type[M]) -> M:
    if not request.body:
        raise InvalidJson("a JSON object body is required")
    _check_media_type(request.headers.get("content-type"))
    coding = request.headers.get("content-encoding", "identity").strip().lower()
    if coding != "identity":
        raise ApiError(
            f"send the body uncompressed: Content-Encoding {coding[:40]!r} is not accepted",
            status=415,
            code="unsupported_media_type",
            details={"expected": "application/json"},
        )
    try:
        data = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"body is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise InvalidJson("body must be a JSON object")
    bad = _control_characters(data)
    if bad:
        raise RequestValidationError(bad)
    try:
        return model.model_validate(_integral_numbers(data))
    except ValidationError as exc:
        # A RootModel body is a union of models chosen by a tag (an alert's condition).
        tagged = issubclass(model, RootModel)
        raise RequestValidationError.from_pydantic(exc, tagged=tagged) from None


def _check_media_type(content_type: str | None) -> None:
    """JSON (``application/json`` or a ``+json`` type such as ``application/merge-patch+json``),
    in UTF-8 as RFC 8259 requires; no header at all is taken for JSON."""
    if content_type is None:
        return
    media_type, *parameters = (part.strip().lower() for part in content_type.split(";"))
    charsets = [p.partition("=")[2].strip('"') for p in parameters if p.startswith("charset=")]
    if _JSON_MEDIA_TYPE.fullmatch(media_type) and all(c == "utf-8" for c in charsets):
        return
    raise ApiError(
        f"the body is JSON: send Content-Type: application/json (UTF-8), not "
        f"{content_type[:100]!r}",
        status=415,
        code="unsupported_media_type",
        details={"expected": "application/json"},
    )


def _integral_numbers(value: Any) -> Any:
    """JSON has one number type: ``600.0`` is the integer 600 (as in JSON Schema), which
    strict models would refuse as a float."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral_numbers(item) for item in value]
    return value


def _control_characters(data: dict[str, Any]) -> dict[str, str]:
    """Each string's path holding a control character; 400 for a body nested deeper than
    :data:`MAX_DEPTH` (no body of ours nests more than a few levels; a walk, or pydantic,
    over a thousand levels would run out of stack)."""
    bad: dict[str, str] = {}
    pending: list[tuple[Any, str, int]] = [(data, "", 0)]
    while pending:
        value, path, depth = pending.pop()
        if isinstance(value, str):
            if _CONTROL.search(value):
                bad.setdefault(path or "body", "must not contain control characters")
            continue
        if isinstance(value, dict):
            items: Iterable[tuple[Any, Any]] = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            continue
        if depth >= MAX_DEPTH:
            raise ApiError(
                f"body nests deeper than {MAX_DEPTH} levels",
                details={"max_depth": MAX_DEPTH},
            )
        pending.extend(
            (item, f"{path}.{key}" if path else str(key), depth + 1) for key, item in items
        )
    return bad


def parse_query(request: Request, model: type[M]) -> M:
    # A repeated parameter is ambiguous (frameworks differ on which value wins): refused. A
    # blank one (``?limit=``) is a value, refused if it does not fit, not a missing one.
    args = request.get_args(keep_blank_values=True)
    repeated = {key: "given more than once; send it once" for key, v in args.items() if len(v) > 1}
    if repeated:
        raise RequestValidationError(repeated)
    data = {key: values[0] for key, values in args.items()}
    # int() takes "1_0" and Arabic-Indic digits, pydantic "10.0": a query integer is 0-9 only.
    loose = {
        key: "must be an integer in decimal digits"
        for key in _integer_parameters(model)
        if key in data and not _DECIMAL.fullmatch(data[key])
    }
    if loose:
        raise RequestValidationError(loose)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError.from_pydantic(exc) from None


_DECIMAL = re.compile(r"\s*-?[0-9]+\s*")


@cache
def _integer_parameters(model: type[BaseModel]) -> frozenset[str]:
    """The names of ``model``'s integer parameters (optional ones too)."""
    return frozenset(
        field.alias or name
        for name, field in model.model_fields.items()
        if _integral(field.annotation)
    )


def _integral(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _integral(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(_integral(arg) for arg in get_args(annotation) if arg is not type(None))
    return annotation is int
