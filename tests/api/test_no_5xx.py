"""No input yields a 5xx: hypothesis over bodies, query strings, path parameters and
headers, on every declared route (walked from the blueprints' ``@operation`` declarations),
with a user's token. Every answer is as documented (the suite's ContractClient), every
refusal the error envelope, and no error-level line is logged (log_guard). Examples are
derandomised (the same inputs every run) and bounded: the module takes under a minute.

schemathesis (tests/integration/test_openapi_fuzz.py) fuzzes from the document; this test
draws from what the document does not say too: wrong JSON types and shapes, unknown
fields and parameters, non-JSON bodies, odd headers.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import uuid
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from sanic import Sanic
from sanic.router import Route
from sanic_testing.reusable import ReusableClient

import blueprints
from coinlink.http.contract import Operation, declaration
from tests.support.accounts import bearer, login, register
from tests.support.apps import build_app

MAX_EXAMPLES = 50


def declared_operations() -> list[str]:
    """The operation id of every ``@operation`` handler in the blueprints."""
    found = []
    for info in pkgutil.iter_modules(blueprints.__path__):
        module = importlib.import_module(f"blueprints.{info.name}")
        for value in vars(module).values():
            op = declaration(value) if callable(value) else None
            if op is not None and value.__module__ == module.__name__:
                found.append(op.operation_id)
    return sorted(found)


OPERATIONS = declared_operations()


@pytest.fixture(scope="module")
def app(pg_url: str, redis_url: str) -> Sanic:
    # Private webhook URLs allowed: the syntax rules still run, but no random host name is
    # sent to a real resolver (seconds each); the address rules have their own tests.
    return build_app(pg_url, redis_url, webhook_allow_private=True)


@pytest.fixture(scope="module")
def user(client: ReusableClient) -> dict[str, Any]:
    return register(client)


def route_of(app: Sanic, operation_id: str) -> tuple[Route, str, Operation]:
    for route in app.router.routes:
        op = declaration(route.handler)
        if op is not None and op.operation_id == operation_id:
            [method] = sorted(route.methods - {"HEAD", "OPTIONS"})
            return route, method, op
    raise LookupError(operation_id)


def test_every_route_of_the_app_is_covered(app: Sanic) -> None:
    served = {op.operation_id for r in app.router.routes if (op := declaration(r.handler))}
    assert served == set(OPERATIONS)


# --- what requests are made of ---------------------------------------------------------

_INTERESTING = [
    "",
    " ",
    "BTC-USD",
    "btc-usd",
    "NOPE-USD",
    "1",
    "0",
    "-1",
    "0.5",
    "1e5",
    "NaN",
    "Infinity",
    "99999999999999999999999999999.123456789",
    "1700000000",
    "1700000000000",
    "9" * 40,
    "true",
    "false",
    "null",
    "yes",
    str(uuid.UUID(int=0)),
    "https://93.184.215.14/hook",
    "http://127.0.0.1:1/x",
    "https://xn--/x",
    "https://xn--ab-.com/x",
    "http://[::1]/",
    "2026-12-06T09:30:00Z",
    "WyIyMDI2IiwgMV0",  # base64 of a JSON list: a cursor-ish value
    "..",
    "%00",
    "\u2764",
    "a" * 300,
]
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


def _schema_words(model: type[BaseModel]) -> tuple[list[str], list[str]]:
    """Every property name and every enum or const value of a model's JSON Schema."""
    names: set[str] = set()
    values: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            names.update(node.get("properties", {}))
            values.update(str(v) for v in node.get("enum", []))
            if "const" in node:
                values.add(str(node["const"]))
            for item in node.values():
                walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(model.model_json_schema())
    return sorted(names), sorted(values)


def _values(words: list[str]) -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=False, allow_infinity=False)
        | _TEXT
        | st.sampled_from(_INTERESTING + words)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(words) if words else _TEXT, inner, max_size=3)
        ),
        max_leaves=6,
    )


def _bodies(model: type[BaseModel] | None) -> st.SearchStrategy[bytes | None]:
    raw = st.none() | st.binary(max_size=64) | st.sampled_from([b"{}", b"[]", b"null", b"{"])
    if model is None:
        return raw
    names, words = _schema_words(model)
    values = _values(names + words)
    objects = st.fixed_dictionaries(
        {}, optional={name: values for name in names}
    ) | st.dictionaries(st.sampled_from(names) | _TEXT, values, max_size=4)
    return st.one_of(objects.map(lambda o: json.dumps(o).encode()), raw)


def _queries(model: type[BaseModel] | None) -> st.SearchStrategy[list[tuple[str, str]]]:
    names, words = _schema_words(model) if model is not None else ([], [])
    value = _TEXT | st.sampled_from(_INTERESTING + words)
    name = st.sampled_from([*names, "_", "colour"]) | _TEXT.filter(bool)
    return st.lists(st.tuples(name, value), max_size=4)


# Octets HTTP/1.1 allows in a field value (h11 checks what the client sends): no control
# characters, no whitespace at either end.
_HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=60,
).map(lambda text: text.strip(" "))
_HEADER_NAMES = [
    "content-type",
    "accept",
    "accept-encoding",
    "user-agent",
    "x-request-id",
    "origin",
    "x-forwarded-for",
    "cookie",
    "if-none-match",
    "range",
]
_CONTENT_TYPES = [
    "application/json",
    "application/json; charset=latin-1",
    "text/plain",
    "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded",
]
_HEADERS = st.dictionaries(
    st.sampled_from(_HEADER_NAMES), _HEADER_TEXT | st.sampled_from(_CONTENT_TYPES), max_size=4
)
_PARAMETER = re.compile(r"<([a-zA-Z_][a-zA-Z0-9_]*)(?::[^>]*)?>")
_SEGMENTS = (
    st.sampled_from(["BTC-USD", "eth-usd", str(uuid.uuid4()), str(uuid.UUID(int=0)), "x"])
    | _TEXT.filter(lambda s: s not in ("", ".", ".."))
).map(lambda s: quote(s, safe=""))


def _paths(route: Route) -> st.SearchStrategy[str]:
    names = _PARAMETER.findall(route.path)
    if not names:
        return st.just("/" + route.path)

    def fill(segments: list[str]) -> str:
        values = iter(segments)
        return "/" + _PARAMETER.sub(lambda _: next(values), route.path)

    return st.lists(_SEGMENTS, min_size=len(names), max_size=len(names)).map(fill)


# --- the property -----------------------------------------------------------------------


@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_no_input_yields_a_5xx(
    app: Sanic, client: ReusableClient, user: dict[str, Any], operation_id: str
) -> None:
    route, method, op = route_of(app, operation_id)
    session = {"headers": bearer(user["tokens"])}

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        path=_paths(route),
        query=_queries(op.query),
        body=_bodies(op.body),
        headers=_HEADERS,
    )
    def no_5xx(
        path: str, query: list[tuple[str, str]], body: bytes | None, headers: dict[str, str]
    ) -> None:
        _, response = client.request(
            path,
            http_method=method.lower(),
            params=query,
            content=body,
            # Bytes: the header's octets as they are (httpx would encode text as ASCII).
            headers={**{k: v.encode("latin-1") for k, v in headers.items()}, **session["headers"]},
        )
        assert response.status < 500, f"{method} {path} {query} {body!r}: {response.text}"
        if response.status >= 400:
            assert set(response.json["error"]) == {"code", "message", "details", "trace_id"}
        if response.status == 401 and op.auth != "none":
            # The example logged the session out (POST /auth/logout): a new one for the next.
            session["headers"] = bearer(login(client, user["email"])["tokens"])

    no_5xx()
