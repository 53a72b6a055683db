"""``/readyz`` follows its dependencies: Redis stops → 503 naming it; Redis back → 200; and
so does ``readiness_check_ok`` in the metrics."""

from __future__ import annotations

import time
from typing import Any

from sanic_testing.reusable import ReusableClient

from tests.support.apps import build_app, serve_until
from tests.support.services import RedisServer, free_port


def redis_ok(client: ReusableClient) -> float | None:
    """``readiness_check_ok{check="redis"}`` on the app's /metrics."""
    for line in client.get("/metrics")[1].text.splitlines():
        if line.startswith('readiness_check_ok{check="redis"}'):
            return float(line.split()[-1])
    return None


def test_readyz_follows_redis_without_a_restart(pg_url: str) -> None:
    redis = RedisServer().start()
    restarted = RedisServer(port=redis.port)
    try:
        app = build_app(pg_url, redis.url, check_timeout_s=0.5, redis_timeout_s=0.5)
        with ReusableClient(app, port=free_port()) as client:
            _, response = client.get("/readyz")
            assert response.status == 200, response.text

            redis.stop()
            started = time.monotonic()
            _, response = client.get("/readyz")
            assert time.monotonic() - started < 3  # bounded by the check's deadline
            assert response.status == 503
            body = response.json
            assert body["status"] == "unavailable"
            assert body["checks"]["redis"]["status"] == "fail"
            assert body["checks"]["database"]["status"] == "ok"
            _, health = client.get("/health")
            assert health.status == 200  # liveness does not depend on Redis
            # Prometheus sees it too, from the workers' own periodic checks.
            serve_until(client, lambda: redis_ok(client) == 0.0, 30, "readiness_check_ok 0")

            restarted.start()

            def ready() -> Any:
                _, response = client.get("/readyz")
                return response if response.status == 200 else None

            response = serve_until(client, ready, 30, "/readyz back to 200")
            assert response.json["checks"]["redis"]["status"] == "ok"
            serve_until(client, lambda: redis_ok(client) == 1.0, 30, "readiness_check_ok 1")
    finally:
        restarted.stop()
        redis.stop()


def test_readyz_names_an_unreachable_database(redis_url: str) -> None:
    dead = f"postgres://postgres@127.0.0.1:{free_port()}/nothing"
    app = build_app(dead, redis_url, migrate=False, check_timeout_s=0.5)
    with ReusableClient(app, port=free_port()) as client:
        started = time.monotonic()
        _, response = client.get("/readyz")
        assert time.monotonic() - started < 3
        assert response.status == 503
        checks = response.json["checks"]
        assert checks["database"]["status"] == "fail"
        assert checks["redis"]["status"] == "ok"
