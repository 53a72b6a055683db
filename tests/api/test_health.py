"""Liveness, readiness, metrics and docs."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families
from sanic_testing.reusable import ReusableClient

from coinlink import __version__
from coinlink.market.tick_validator import REASONS


def test_health(client: ReusableClient) -> None:
    _, response = client.get("/health")
    assert response.status == 200
    assert response.json["status"] == "ok"
    assert response.json["version"] == __version__
    assert isinstance(response.json["uptime_s"], int)


def test_readyz_reports_each_dependency(client: ReusableClient) -> None:
    _, response = client.get("/readyz")
    assert response.status == 200, response.text
    body = response.json
    assert body["status"] == "ready"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["database"]["backend"] == "postgres"
    assert body["checks"]["redis"] == {
        **body["checks"]["redis"],
        "status": "ok",
        "backend": "redis",
    }


def test_metrics_count_requests_by_route_template(client: ReusableClient) -> None:
    client.get("/no/such/route/1")
    client.get("/no/such/route/2")
    _, response = client.get("/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'http_requests_total{method="GET",route="<unmatched>",status="404"}' in text
    assert "/no/such/route/1" not in text  # raw paths never become labels
    assert "http_request_duration_seconds_bucket" in text
    assert 'le="0.15"' in text
    assert "http_requests_in_flight" in text


def test_each_request_is_counted_and_timed_once(client: ReusableClient) -> None:
    def health_samples() -> dict[str, float]:
        text = client.get("/metrics")[1].text
        return {
            sample.name + sample.labels.get("le", ""): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.labels.get("route") == "/health"
            and sample.labels.get("method") == "GET"  # not another test's OPTIONS /health
            and sample.labels.get("status") in (None, "200")
            and sample.labels.get("le") in (None, "0.15", "+Inf")
        }

    before = health_samples()
    for _ in range(3):
        assert client.get("/health")[1].status == 200
    after = health_samples()
    changed = {name: after[name] - before.get(name, 0.0) for name in after}
    assert changed["http_requests_total"] == 3
    assert changed["http_request_duration_seconds_count"] == 3
    assert changed["http_request_duration_seconds_bucket0.15"] == 3  # each well under 0.15 s
    assert changed["http_request_duration_seconds_bucket+Inf"] == 3
    assert 0 < changed["http_request_duration_seconds_sum"] < 3 * 0.15


def test_every_tick_drop_reason_is_exported_from_the_start(client: ReusableClient) -> None:
    """At 0 before any drop: a series that only appears with its first drop leaves an alert
    on its rate blind until then."""
    text = client.get("/metrics")[1].text
    for reason in (*REASONS, "malformed"):
        assert f'ingest_ticks_dropped_total{{reason="{reason}"}}' in text


def test_openapi_document_lists_operations(client: ReusableClient) -> None:
    _, response = client.get("/docs/openapi.json")
    assert response.status == 200
    paths = response.json["paths"]
    assert {"/health", "/readyz", "/metrics"} <= set(paths)


def test_docs_page_is_served_with_both_apis(client: ReusableClient) -> None:
    _, response = client.get("/docs")
    assert response.status == 200
    assert "text/html" in response.headers["content-type"]
    page = response.text
    assert "<script" not in page
    # A REST operation and a WebSocket message, each with its fields linked.
    assert 'id="createAlert"' in page or "/api/v2/alerts" in page
    assert 'id="message-SubscribeAck"' in page
    assert 'href="#ws-schema-Subscribed"' in page


def test_metrics_do_not_take_label_values_from_the_client(client: ReusableClient) -> None:
    _, response = client.request("/health", http_method="purge")
    assert response.status == 405
    assert response.json["error"]["code"] == "method_not_allowed"
    _, metrics = client.get("/metrics")
    assert 'method="PURGE"' not in metrics.text
    assert re.search(
        r'http_requests_total\{method="OTHER",route="[^"]+",status="405"\}', metrics.text
    )


def metric(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_metrics_count_every_request_exactly_and_none_stays_in_flight(
    client: ReusableClient,
) -> None:
    # Counters and the in-flight gauge are written once per event-loop turn, not per
    # request: the totals must still be exact when the next request reads them.
    sample = 'http_requests_total{method="GET",route="/health",status="200"}'
    before = metric(client.get("/metrics")[1].text, sample)
    for _ in range(7):
        assert client.get("/health")[1].status == 200
    text = client.get("/metrics")[1].text
    assert metric(text, sample) == before + 7
    # Every finished request left the gauge. (The scrape does not count itself: begun and
    # answered in one loop turn, it nets to nothing before the turn's write.)
    assert metric(text, "http_requests_in_flight") == 0.0
