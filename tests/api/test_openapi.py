"""The OpenAPI document: valid 3.1, built from every route's declaration, served at /docs."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from sanic import Sanic, json
from sanic_testing.reusable import ReusableClient

from coinlink.http.openapi import Undeclared, document

BLUEPRINTS = Path(__file__).resolve().parents[2] / "blueprints"
Document = dict[str, Any]


@pytest.fixture(scope="module")
def served(client: ReusableClient) -> Document:
    _, response = client.get("/docs/openapi.json")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    return dict(response.json)


def _operations(doc: Document) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op) for path, item in doc["paths"].items() for method, op in item.items()
    ]


def test_the_served_document_is_valid_openapi_3_1(served: Document) -> None:
    assert served["openapi"].startswith("3.1")
    validate(served)


def test_every_route_but_the_websocket_and_the_docs_is_documented(
    app: Sanic, served: Document
) -> None:
    routes = {
        ("/" + route.path.split("<")[0].rstrip("/"), method.lower())
        for route in app.router.routes
        for method in route.methods - {"OPTIONS", "HEAD"}
        if not route.path.startswith(("docs", "ws"))
    }
    documented = {
        (path.split("{")[0].rstrip("/"), method) for path, method, _ in _operations(served)
    }
    assert routes == documented
    assert "/ws" not in served["paths"]


def test_a_route_without_a_declaration_is_refused(app: Sanic) -> None:
    bare = Sanic(f"{app.name}_bare")

    @bare.get("/undeclared")
    async def undeclared(request: object) -> Any:
        return json({})

    with pytest.raises(Undeclared, match="GET /undeclared"):
        document(bare, version="0", description="")


def test_handlers_take_their_models_from_their_declarations() -> None:
    """No blueprint parses a body or a query itself: ``@operation`` does, from what it
    declares, so the documented models are the parsed ones."""
    for module in BLUEPRINTS.glob("*.py"):
        tree = ast.parse(module.read_text())
        called = {
            node.func.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        }
        assert not called & {"parse_body", "parse_query"}, module.name


def test_each_operation_documents_its_errors(served: Document) -> None:
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope"}
    for path, method, op in _operations(served):
        label = f"{method} {path}"
        responses = op["responses"]
        assert any(status.startswith("2") for status in responses), label
        for status, response in responses.items():
            if status.startswith("4"):
                assert response["content"]["application/json"]["schema"] == envelope, label
        if "requestBody" in op:
            assert op["requestBody"]["required"] is True, label
            assert {"400", "413", "422"} <= set(responses), label
        if op.get("security"):
            assert op["security"] == [{"bearer": []}]
            assert "401" in responses, label
        if path not in ("/health", "/readyz", "/metrics"):
            limited = responses["429"]["headers"]
            assert set(limited) == {
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
                "Retry-After",
            }, label
    admin = served["paths"]["/api/v2/admin/ticks"]["post"]["responses"]
    assert "403" in admin


def test_lists_document_their_parameters(served: Document) -> None:
    def names(path: str) -> set[str]:
        return {p["name"] for p in served["paths"][path]["get"].get("parameters", [])}

    # `_`: a cache buster, accepted and ignored (docs/api.md, conventions).
    assert names("/api/v2/alerts") == {"_", "cursor", "limit", "status"}
    assert names("/api/v2/notifications") == {"_", "cursor", "limit", "unread"}
    assert names("/api/v2/notifications/deliveries") == {"_", "cursor", "limit"}
    candles = {
        p["name"]: p["schema"]
        for p in served["paths"]["/api/v2/market/candles/{symbol}"]["get"]["parameters"]
    }
    assert candles["start"]["format"] == candles["end"]["format"] == "int64"
    assert candles["start"]["minimum"] == candles["end"]["minimum"] == 10**12  # not seconds


def test_market_values_are_typed_as_on_the_wire(served: Document) -> None:
    schemas = served["components"]["schemas"]
    price = schemas["Ticker"]["properties"]["price"]["anyOf"][0]
    assert price["type"] == "string" and price["pattern"]
    assert schemas["Candle"]["properties"]["open_time"]["format"] == "int64"
    assert schemas["Alert"]["properties"]["status"]["enum"] == ["active", "disabled", "triggered"]


def test_creating_an_alert_links_to_reading_it(served: Document) -> None:
    links = served["paths"]["/api/v2/alerts"]["post"]["responses"]["201"]["links"]
    assert links["GetAlert"] == {
        "operationId": "get_alert",
        "parameters": {"alert_id": "$response.body#/id"},
    }
    operation_ids = {op["operationId"] for _, _, op in _operations(served)}
    assert {link["operationId"] for link in links.values()} <= operation_ids


def test_the_reference_page_needs_nothing_from_elsewhere(client: ReusableClient) -> None:
    _, response = client.get("/docs")
    assert response.status == 200
    page = response.text
    assert "<script" not in page and "http" not in page.replace("/docs/openapi.json", "")
    assert "/api/v2/alerts" in page and 'id="schema-Alert"' in page
    assert "default-src 'none'" in response.headers["content-security-policy"]
