"""Rate limits at the HTTP level: headers, 429 envelope, policies, proxies, Redis outages.

Each test serves its own small app on the run's Redis with a key prefix of its own, so
budgets never leak between tests. The app has CoinLink's real error handler and trace
id/metrics middleware, and the rate-limit middleware installed by :func:`install` exactly
as the factory does, plus stand-in routes for things, login and register: the tests do
not depend on the real account routes. The last test goes through ``create_app`` itself to
check the wiring. Two apps served on one prefix stand for two processes sharing a budget;
``script_calls`` counts the limiter's Redis round trips.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sanic import HTTPResponse, Request, Sanic, json
from sanic_testing.reusable import ReusableClient

from blueprints import health
from coinlink.http import middleware
from coinlink.http.client_address import TrustedProxies
from coinlink.http.errors import EnvelopeErrorHandler
from coinlink.http.operator_access import OperatorAccess
from coinlink.http.ratelimit import enforce, install
from coinlink.ratelimit import Policies, RateLimiter
from coinlink.serving.drain import Drain
from config import load_settings
from tests.support.accounts import bearer, login, register
from tests.support.apps import TEST_ORIGIN, TEST_SECRET, build_app
from tests.support.script_calls import ScriptCalls
from tests.support.services import RedisServer, free_port

THINGS = "/api/v2/things"
LOGIN = "/api/v2/auth/login"
REGISTER = "/api/v2/auth/register"


async def user_of(request: Request, token: str) -> str | None:
    return "u1" if token == "good" else None


def make_app(redis_url: str | None, prefix: str, **overrides: Any) -> Sanic[Any, Any]:
    settings = load_settings(
        env="test",
        jwt_secret=TEST_SECRET,
        cors_origins=TEST_ORIGIN,
        access_log=False,
        **{"rate_limit_anonymous": "3/60", **overrides},
    )
    app = Sanic(f"rl_{uuid.uuid4().hex[:8]}", error_handler=EnvelopeErrorHandler())
    app.config.ACCESS_LOG = False
    app.ctx.settings = settings
    app.ctx.operators = OperatorAccess(settings.metrics_token, production=False)
    middleware.install(
        app, production=False, access_log_enabled=False, drain=Drain(settings.shutdown)
    )
    app.blueprint(health.bp)

    @app.route(THINGS, methods=["GET", "POST", "OPTIONS"])
    async def things(request: Request) -> HTTPResponse:
        return json({"ok": True})

    @app.post(LOGIN)
    async def login(request: Request) -> HTTPResponse:
        # What the real handler does after validating the body.
        await enforce(request, "login_account", request.json["email"])
        return json({"ok": True})

    @app.post(REGISTER)
    async def register(request: Request) -> HTTPResponse:
        return json({"ok": True}, status=201)

    limiter = RateLimiter(redis_url, prefix=prefix, timeout_s=0.25)
    install(
        app,
        limiter,
        Policies.from_settings(settings.rate_limit),
        TrustedProxies(settings.trusted_proxies),
        user_of,
    )

    async def start(_: Sanic[Any, Any]) -> None:
        await limiter.start()

    async def stop(_: Sanic[Any, Any]) -> None:
        await limiter.close()

    app.register_listener(start, "before_server_start")
    app.register_listener(stop, "after_server_stop")
    return app


Serve = Callable[..., ReusableClient]


@pytest.fixture
def serve(redis_url: str, bus_prefix: str) -> Iterator[Serve]:
    """``serve(**settings)`` → a started client of a fresh app (on the run's Redis)."""
    with ExitStack() as stack:

        def start(redis: str | None = redis_url, **overrides: Any) -> ReusableClient:
            app = make_app(redis, bus_prefix, **overrides)
            return stack.enter_context(ReusableClient(app, port=free_port()))

        yield start


def limit_headers(response: Any) -> tuple[int, int, int]:
    h = response.headers
    return int(h["ratelimit-limit"]), int(h["ratelimit-remaining"]), int(h["ratelimit-reset"])


def test_limit_plus_one_is_429_with_envelope_and_headers(serve: Serve) -> None:
    client = serve()
    seen = []
    for _ in range(3):
        _, response = client.get(THINGS)
        assert response.status == 200
        seen.append(limit_headers(response))
    # Remaining counts down; the reset (seconds until the budget is whole) counts up.
    assert seen == [(3, 2, 20), (3, 1, 40), (3, 0, 60)]

    _, refused = client.get(THINGS, headers={"x-request-id": "rl-trace-1"})
    assert refused.status == 429
    error = refused.json["error"]
    assert error["code"] == "rate_limited"
    assert error["message"] == "too many requests; retry later"
    assert error["trace_id"] == "rl-trace-1" == refused.headers["x-request-id"]
    retry_after = refused.headers["retry-after"]
    assert retry_after.isdigit() and 19 <= int(retry_after) <= 20
    limit, remaining, reset = limit_headers(refused)
    assert (limit, remaining) == (3, 0) and 59 <= reset <= 60
    assert refused.headers["x-content-type-options"] == "nosniff"  # still the full treatment


def test_a_sliced_policy_counts_down_exactly_and_refusals_stay_local(
    serve: Serve, script_calls: ScriptCalls
) -> None:
    client = serve(rate_limit_anonymous="100/600")  # slices of up to 5; T = 6 s
    remaining = []
    for _ in range(100):
        _, response = client.get(THINGS)
        assert response.status == 200
        remaining.append(limit_headers(response)[1])
    assert remaining == list(range(99, -1, -1))  # never negative, one per request
    calls = script_calls.count
    assert calls < 35  # 100 requests; 1 + 2 + 4 then slices of 5, and the last few singly
    for _ in range(20):
        _, refused = client.get(THINGS)
        assert refused.status == 429
        assert limit_headers(refused)[1] == 0 and 1 <= int(refused.headers["retry-after"]) <= 6
    assert script_calls.count == calls + 1  # the first refusal, then cached


def test_two_processes_share_one_budget(serve: Serve) -> None:
    """Two apps on one Redis prefix: a sliced policy over-admits by at most 2 * (n - 1)."""
    first = serve(rate_limit_anonymous="100/600")  # slices of up to 5
    second = serve(rate_limit_anonymous="100/600")
    statuses = [(first, second)[i % 2].get(THINGS)[1].status for i in range(130)]
    assert 100 <= statuses.count(200) <= 100 + 2 * (5 - 1)
    assert statuses[-10:] == [429] * 10


def test_login_limits_stay_exact_across_two_processes(serve: Serve) -> None:
    first = serve(rate_limit_anonymous="1000/60", rate_limit_login_ip="3/60")
    second = serve(rate_limit_anonymous="1000/60", rate_limit_login_ip="3/60")
    logins = [
        (first, second)[i % 2].post(LOGIN, json={"email": f"{i}@example.test"})[1].status
        for i in range(5)
    ]
    assert logins == [200, 200, 200, 429, 429]


def test_unmatched_routes_pay_too(serve: Serve) -> None:
    client = serve()
    for _ in range(3):
        assert client.get("/no/such/route")[1].status == 404
    assert client.get("/no/such/route")[1].status == 429
    assert client.get(THINGS)[1].status == 429


def test_operations_docs_and_preflight_are_never_limited(serve: Serve) -> None:
    client = serve()
    for _ in range(4):
        client.get(THINGS)
    assert client.get(THINGS)[1].status == 429
    for _ in range(5):
        _, response = client.get("/health")
        assert response.status == 200
        assert "ratelimit-limit" not in response.headers
    assert client.get("/metrics")[1].status == 200
    _, docs = client.get("/docs/openapi.json")
    assert docs.status == 200 and "ratelimit-limit" not in docs.headers
    assert client.options(THINGS)[1].status != 429


def test_bearer_user_has_its_own_budget(serve: Serve) -> None:
    client = serve(rate_limit_user="5/60")
    for _ in range(3):
        client.get(THINGS)
    assert client.get(THINGS)[1].status == 429
    _, response = client.get(THINGS, headers={"authorization": "Bearer good"})
    assert response.status == 200
    assert limit_headers(response)[:2] == (5, 4)
    # A token that names nobody is just another anonymous request from this address.
    bad = client.get(THINGS, headers={"authorization": "Bearer forged"})[1]
    assert bad.status == 429
    for _ in range(4):
        assert client.get(THINGS, headers={"authorization": "Bearer good"})[1].status == 200
    assert client.get(THINGS, headers={"authorization": "bearer good"})[1].status == 429


def test_spoofed_xff_from_an_untrusted_peer_is_ignored(serve: Serve) -> None:
    client = serve()  # 127.0.0.1 is not a trusted proxy
    statuses = []
    for i in range(5):
        request, response = client.get(THINGS, headers={"x-forwarded-for": f"198.51.100.{i}"})
        statuses.append(response.status)
        assert request.ctx.client_ip == "127.0.0.1"
    assert statuses == [200, 200, 200, 429, 429]


def test_xff_clients_behind_a_trusted_proxy_get_separate_budgets(serve: Serve) -> None:
    client = serve(trusted_proxies="127.0.0.1")
    one = {"x-forwarded-for": "6.6.6.6, 198.51.100.1"}  # the client's own entry is ignored
    for _ in range(3):
        request, response = client.get(THINGS, headers=one)
        assert response.status == 200
        assert request.ctx.client_ip == "198.51.100.1"
    assert client.get(THINGS, headers=one)[1].status == 429
    assert client.get(THINGS, headers={"x-forwarded-for": "7.7.7.7, 198.51.100.1"})[1].status == 429
    _, other = client.get(THINGS, headers={"x-forwarded-for": "198.51.100.2"})
    assert other.status == 200 and limit_headers(other)[1] == 2
    # The proxy itself (no header) is one more client.
    assert client.get(THINGS)[1].status == 200


def test_login_and_register_are_limited_per_ip(serve: Serve) -> None:
    client = serve(
        rate_limit_anonymous="100/60",
        rate_limit_login_ip="2/60",
        rate_limit_login_account="100/60",
        rate_limit_register="1/60",
    )
    body = {"email": "a@example.test"}
    first = client.post(LOGIN, json=body)[1]
    assert first.status == 200
    assert limit_headers(first)[:2] == (2, 1)  # the most restrictive policy is shown
    assert client.post(LOGIN, json={"email": "b@example.test"})[1].status == 200
    refused = client.post(LOGIN, json={"email": "c@example.test"})[1]
    assert refused.status == 429 and refused.json["error"]["code"] == "rate_limited"
    assert limit_headers(refused)[:2] == (2, 0)
    # The same route spelt differently pays the same policy.
    assert client.post(LOGIN + "/", json=body)[1].status == 429
    # Other routes only pay the anonymous policy.
    _, things = client.get(THINGS)
    assert things.status == 200 and limit_headers(things)[0] == 100

    assert client.post(REGISTER, json={})[1].status == 201
    assert client.post(REGISTER, json={})[1].status == 429


def test_login_account_is_limited_per_account(serve: Serve) -> None:
    client = serve(
        rate_limit_anonymous="100/60",
        rate_limit_login_ip="100/60",
        rate_limit_login_account="2/60",
    )
    victim = {"email": "victim@example.test"}
    assert [client.post(LOGIN, json=victim)[1].status for _ in range(3)] == [200, 200, 429]
    refused = client.post(LOGIN, json=victim)[1]
    assert refused.headers["retry-after"].isdigit()
    # Other accounts are unaffected.
    assert client.post(LOGIN, json={"email": "other@example.test"})[1].status == 200


def test_limiter_runs_after_the_trace_id_middleware(serve: Serve) -> None:
    client = serve()
    app = client.app
    labels = {"method": "GET", "route": THINGS, "status": "429"}
    before = REGISTRY.get_sample_value("http_requests_total", labels) or 0.0
    for _ in range(4):
        client.get(THINGS)
    # The 429 went through the metrics hook: it ran (priority 1000) before the limiter.
    assert REGISTRY.get_sample_value("http_requests_total", labels) == before + 1
    # Sanic's order: request middleware by priority, highest first; response lowest first.
    request_order = [m.func.__name__ for m in app.request_middleware]
    response_order = [m.func.__name__ for m in app.response_middleware]
    assert request_order.index("begin") < request_order.index("limit_request")
    assert response_order.index("add_headers") < response_order.index("finish")


def test_redis_down_still_limits_without_hanging(serve: Serve) -> None:
    server = RedisServer().start()
    try:
        client = serve(redis=server.url)
        assert client.get(THINGS)[1].status == 200  # decided by Redis
        server.stop()
        statuses = []
        for _ in range(5):
            started = time.monotonic()
            _, response = client.get(THINGS)
            # Never stuck on the dead Redis (its calls are cut at 0.25 s); the rest of the
            # margin is for a loaded machine.
            assert time.monotonic() - started < 3
            statuses.append(response.status)
            assert "ratelimit-limit" in response.headers
        # The in-process limiter has a budget of its own: three, then refusals.
        assert statuses == [200, 200, 200, 429, 429]
        started = time.monotonic()
        assert client.get("/health")[1].status == 200
        assert time.monotonic() - started < 3
    finally:
        server.stop()


def test_disabled_installs_nothing(serve: Serve) -> None:
    client = serve(rate_limits_enabled=False)
    names = [m.func.__name__ for m in client.app.request_middleware]
    assert "limit_request" not in names
    for _ in range(5):
        _, response = client.get(THINGS)
        assert response.status == 200
        assert "ratelimit-limit" not in response.headers
    # enforce() in a handler is a no-op then.
    assert client.post(LOGIN, json={"email": "a@example.test"})[1].status == 200


def test_the_app_factory_wires_the_limiter(pg_url: str, redis_url: str, bus_prefix: str) -> None:
    """End to end through ``create_app``: the real auth routes pay their policies."""
    app = build_app(
        pg_url,
        redis_url,
        redis_prefix=bus_prefix,
        rate_limit_anonymous="100/60",
        rate_limit_login_ip="2/60",
    )
    with ReusableClient(app, port=free_port()) as client:
        wrong = {"email": "nobody@example.com", "password": "wrong-password-1"}
        first = client.post(LOGIN, json=wrong)[1]
        assert first.status == 401
        assert limit_headers(first)[:2] == (2, 1)
        assert client.post(LOGIN, json=wrong)[1].status == 401
        refused = client.post(LOGIN, json=wrong)[1]
        assert refused.status == 429 and refused.headers["retry-after"].isdigit()
        _, health_response = client.get("/health")
        assert health_response.status == 200
        assert "ratelimit-limit" not in health_response.headers


def test_a_logged_out_token_buys_no_budget_of_its_own(
    pg_url: str, redis_url: str, bus_prefix: str
) -> None:
    """Once the address's anonymous budget is spent, a token whose session was logged out
    is refused with it: only a token of an open session has a per-user budget."""
    app = build_app(
        pg_url,
        redis_url,
        redis_prefix=bus_prefix,
        rate_limit_anonymous="3/60",
        rate_limit_register="100/60",
        rate_limit_login_ip="100/60",
    )
    with ReusableClient(app, port=free_port()) as client:
        registered = register(client)
        live = bearer(registered["tokens"])
        gone = bearer(login(client, registered["email"])["tokens"])
        assert client.post("/api/v2/auth/logout", headers=gone)[1].status == 204
        # Register and login spent two of the address's three; one more, then refusals.
        spent = [client.get("/api/v2/market/tickers")[1].status for _ in range(2)]
        assert spent == [200, 429]
        refused = client.get("/api/v2/market/tickers", headers=gone)[1]
        assert refused.status == 429
        assert limit_headers(refused)[0] == 3  # the anonymous policy's
        _, served = client.get("/api/v2/market/tickers", headers=live)
        assert served.status == 200
        assert limit_headers(served)[0] == 100_000  # the user policy (build_app's)
