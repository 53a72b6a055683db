"""The Auth and Users contract, end to end: PostgreSQL + Redis, and the embedded default."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sanic import Sanic
from sanic_testing.reusable import ReusableClient

from tests.support.accounts import (
    PASSWORD,
    bearer,
    claims,
    forge,
    login,
    new_email,
    register,
)
from tests.support.apps import build_app
from tests.support.services import free_port

INVALID_TOKEN_CHALLENGE = 'Bearer error="invalid_token"'
SECRET_MARKERS = ("$2b$", "password_hash", 'password"')


@pytest.fixture(scope="module", params=["postgres+redis", "sqlite+memory"])
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Sanic:
    if request.param == "postgres+redis":
        return build_app(request.getfixturevalue("pg_url"), request.getfixturevalue("redis_url"))
    path = tmp_path_factory.mktemp("embedded") / "coinlink.sqlite3"
    return build_app(f"sqlite://{path}", None)


@pytest.fixture(scope="module")
def client(app: Sanic) -> Iterator[ReusableClient]:
    with ReusableClient(app, port=free_port()) as client:
        yield client


def assert_no_secrets(response: Any) -> None:
    for marker in SECRET_MARKERS:
        assert marker not in response.text


def assert_invalid_token(response: Any, code: str = "invalid_token") -> None:
    assert response.status == 401, response.text
    assert response.json["error"]["code"] == code
    assert response.headers["www-authenticate"] == INVALID_TOKEN_CHALLENGE


def me(client: ReusableClient, token: str) -> Any:
    return client.get("/api/v2/users/me", headers={"authorization": f"Bearer {token}"})[1]


# -- registration and login --------------------------------------------------------------


def test_register_returns_the_user_and_tokens(client: ReusableClient) -> None:
    email = f"Mixed.Case-{uuid.uuid4().hex[:6]}@Example.COM"
    _, response = client.post(
        "/api/v2/auth/register",
        json={"email": email, "password": PASSWORD, "display_name": "  Ada  "},
    )
    assert response.status == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json
    assert set(body["user"]) == {"id", "email", "display_name", "is_admin", "created_at"}
    assert body["user"]["email"] == email.lower()
    assert body["user"]["display_name"] == "Ada"
    assert body["user"]["is_admin"] is False
    assert body["user"]["created_at"].endswith("Z")
    uuid.UUID(body["user"]["id"])
    tokens = body["tokens"]
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 900
    assert tokens["access_token"].count(".") == 2
    assert tokens["refresh_token"] and "." not in tokens["refresh_token"]
    assert_no_secrets(response)
    assert me(client, tokens["access_token"]).json == body["user"]


def test_duplicate_email_is_409_whatever_the_case(client: ReusableClient) -> None:
    account = register(client)
    _, response = client.post(
        "/api/v2/auth/register", json={"email": account["email"].upper(), "password": PASSWORD}
    )
    assert response.status == 409
    assert response.json["error"]["code"] == "email_taken"


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("a" * 73, "73 ASCII bytes"),
        ("\N{GRINNING FACE}" * 25, "100 bytes of emoji (25 characters)"),
        ("short", "under 8 bytes"),
        ("", "empty"),
    ],
)
@pytest.mark.parametrize("route", ["register", "login"])
def test_password_outside_8_to_72_bytes_is_422(
    client: ReusableClient, route: str, password: str, why: str
) -> None:
    _, response = client.post(
        f"/api/v2/auth/{route}", json={"email": new_email(), "password": password}
    )
    assert response.status == 422, why
    assert set(response.json["error"]["details"]["fields"]) == {"password"}


def test_72_bytes_of_emoji_is_a_valid_password(client: ReusableClient) -> None:
    password = "\N{GRINNING FACE}" * 18  # 72 bytes
    account = register(client, password=password)
    assert login(client, account["email"], password)["user"]["id"] == account["user"]["id"]


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "password": PASSWORD},
        {"email": "a@b", "password": PASSWORD},
        {"password": PASSWORD},
        {"email": "x@example.com", "password": PASSWORD, "is_admin": True},
    ],
)
def test_bad_registrations_are_422(client: ReusableClient, body: dict[str, Any]) -> None:
    _, response = client.post("/api/v2/auth/register", json=body)
    assert response.status == 422
    assert response.json["error"]["code"] == "validation_error"


def test_login_returns_a_new_session(client: ReusableClient) -> None:
    account = register(client)
    body = login(client, account["email"].upper(), PASSWORD)
    assert body["user"] == account["user"]
    assert body["tokens"]["refresh_token"] != account["tokens"]["refresh_token"]
    assert me(client, body["tokens"]["access_token"]).status == 200


def test_unknown_email_and_wrong_password_look_the_same(client: ReusableClient) -> None:
    account = register(client)
    _, wrong = client.post(
        "/api/v2/auth/login", json={"email": account["email"], "password": "wrong password"}
    )
    _, unknown = client.post(
        "/api/v2/auth/login", json={"email": new_email(), "password": "wrong password"}
    )
    assert wrong.status == unknown.status == 401
    strip = lambda body: {**body["error"], "trace_id": None}  # noqa: E731
    assert strip(wrong.json) == strip(unknown.json)
    assert wrong.json["error"]["code"] == "invalid_credentials"
    varying = {"x-request-id", "date", "ratelimit-remaining", "ratelimit-reset", "content-length"}
    assert {k: v for k, v in wrong.headers.items() if k not in varying} == {
        k: v for k, v in unknown.headers.items() if k not in varying
    }


# -- access tokens -------------------------------------------------------------------------


def test_missing_authorization_is_401_with_a_challenge(client: ReusableClient) -> None:
    _, response = client.get("/api/v2/users/me")
    assert response.status == 401
    assert response.json["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer:abc", "Token abc"])
def test_other_authorization_schemes_are_refused(client: ReusableClient, header: str) -> None:
    _, response = client.get("/api/v2/users/me", headers={"authorization": header})
    assert_invalid_token(response)


@pytest.fixture(scope="module")
def account(client: ReusableClient) -> dict[str, Any]:
    return register(client)


def valid_claims(account: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Claims for the account's real session, so only the overridden part is wrong."""
    import jwt

    real = jwt.decode(account["tokens"]["access_token"], options={"verify_signature": False})
    return claims(**{"sub": real["sub"], "sid": real["sid"], **overrides})


def test_a_forged_token_with_every_claim_right_is_accepted(
    client: ReusableClient, account: dict[str, Any]
) -> None:
    # The control for the tests below: the forging helper makes tokens the server accepts.
    assert me(client, forge(valid_claims(account))).status == 200


def test_alg_none_is_refused(client: ReusableClient, account: dict[str, Any]) -> None:
    token = forge(valid_claims(account), key=None, algorithm="none")
    assert token.endswith(".")
    assert_invalid_token(me(client, token))


def test_another_key_is_refused(client: ReusableClient, account: dict[str, Any]) -> None:
    token = forge(valid_claims(account), key="another-secret-of-sufficient-length-0123")
    assert_invalid_token(me(client, token))


def test_another_algorithm_with_our_secret_is_refused(
    client: ReusableClient, account: dict[str, Any]
) -> None:
    assert_invalid_token(me(client, forge(valid_claims(account), algorithm="HS512")))


def test_an_rs256_token_is_refused_when_hs256_is_configured(
    client: ReusableClient, account: dict[str, Any]
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert_invalid_token(me(client, forge(valid_claims(account), key=key, algorithm="RS256")))


@pytest.mark.parametrize(
    "overrides",
    [
        {"iss": "someone-else"},
        {"aud": "another-api"},
        {"typ": "refresh"},
        {"typ": None},
        {"exp": None},
        {"jti": None},
        {"sid": None},
        {"sub": None},
        {"iat": None},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_wrong_or_missing_claims_are_refused(
    client: ReusableClient, account: dict[str, Any], overrides: dict[str, Any]
) -> None:
    assert_invalid_token(me(client, forge(valid_claims(account, **overrides))))


def test_expired_by_one_second_is_refused(client: ReusableClient, account: dict[str, Any]) -> None:
    now = int(time.time())
    token = forge(valid_claims(account, iat=now - 60, exp=now - 1))
    assert_invalid_token(me(client, token))


@pytest.mark.parametrize("kid", ["../../x", "' OR 1=1 --", "/dev/null", "x" * 5000])
def test_odd_kid_headers_are_refused(
    client: ReusableClient, account: dict[str, Any], kid: str
) -> None:
    assert_invalid_token(me(client, forge(valid_claims(account), headers={"kid": kid})))


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "e30.e30.", "x" * 4000])
def test_malformed_tokens_are_refused(client: ReusableClient, token: str) -> None:
    assert_invalid_token(me(client, token))


def test_refresh_token_is_not_a_bearer_token(client: ReusableClient) -> None:
    account = register(client)
    assert_invalid_token(me(client, account["tokens"]["refresh_token"]))


def test_access_token_cannot_refresh(client: ReusableClient) -> None:
    account = register(client)
    _, response = client.post(
        "/api/v2/auth/refresh", json={"refresh_token": account["tokens"]["access_token"]}
    )
    assert_invalid_token(response)


# -- refresh rotation and reuse ------------------------------------------------------------


def refresh(client: ReusableClient, token: str) -> Any:
    return client.post("/api/v2/auth/refresh", json={"refresh_token": token})[1]


def reuse_count(client: ReusableClient) -> float:
    text = client.get("/metrics")[1].text
    for line in text.splitlines():
        if line.startswith("auth_refresh_token_reuse_total "):
            return float(line.split()[1])
    return 0.0


def test_refresh_rotates_the_token(client: ReusableClient) -> None:
    account = register(client)
    first = refresh(client, account["tokens"]["refresh_token"])
    assert first.status == 200, first.text
    assert first.headers["cache-control"] == "no-store"
    rotated = first.json["tokens"]
    assert rotated["refresh_token"] != account["tokens"]["refresh_token"]
    assert me(client, rotated["access_token"]).status == 200
    second = refresh(client, rotated["refresh_token"])
    assert second.status == 200


def test_reusing_a_spent_refresh_token_revokes_the_family(client: ReusableClient) -> None:
    account = register(client)
    r1 = account["tokens"]["refresh_token"]
    r2_tokens = refresh(client, r1).json["tokens"]
    before = reuse_count(client)

    assert_invalid_token(refresh(client, r1), code="token_reused")
    assert reuse_count(client) == before + 1

    assert_invalid_token(refresh(client, r2_tokens["refresh_token"]))
    assert_invalid_token(me(client, r2_tokens["access_token"]))
    assert_invalid_token(me(client, account["tokens"]["access_token"]))
    # Other sessions of the same user are untouched.
    other = login(client, account["email"])
    assert me(client, other["tokens"]["access_token"]).status == 200


@pytest.mark.parametrize(("token", "status"), [("", 422), ("unknown-token", 401), ("x" * 300, 401)])
def test_unknown_refresh_tokens(client: ReusableClient, token: str, status: int) -> None:
    response = refresh(client, token)
    if status == 401:
        assert_invalid_token(response)
    else:
        assert response.status == 422
        assert set(response.json["error"]["details"]["fields"]) == {"refresh_token"}


# -- logout, sessions, password, deletion --------------------------------------------------


def test_logout_kills_the_access_and_refresh_tokens(client: ReusableClient) -> None:
    account = register(client)
    tokens = account["tokens"]
    _, response = client.post("/api/v2/auth/logout", headers=bearer(tokens))
    assert response.status == 204
    assert_invalid_token(me(client, tokens["access_token"]))
    assert_invalid_token(refresh(client, tokens["refresh_token"]))
    _, again = client.post("/api/v2/auth/logout", headers=bearer(tokens))
    assert_invalid_token(again)


def test_logout_needs_authentication(client: ReusableClient) -> None:
    _, response = client.post("/api/v2/auth/logout")
    assert response.status == 401


def test_sessions_list_marks_the_current_one(client: ReusableClient) -> None:
    account = register(client)
    second = login(client, account["email"])
    _, response = client.get(
        "/api/v2/auth/sessions",
        headers={**bearer(second["tokens"]), "user-agent": "coinlink-tests/1"},
    )
    assert response.status == 200
    items = response.json["items"]
    assert len(items) == 2
    assert [item["current"] for item in items].count(True) == 1
    for item in items:
        assert set(item) == {"id", "created_at", "last_used_at", "user_agent", "ip", "current"}
        assert item["ip"] == "127.0.0.1"


def session_ids(client: ReusableClient, tokens: dict[str, Any]) -> dict[bool, str]:
    items = client.get("/api/v2/auth/sessions", headers=bearer(tokens))[1].json["items"]
    return {item["current"]: item["id"] for item in items}


def test_revoking_one_of_my_sessions(client: ReusableClient) -> None:
    account = register(client)
    other = login(client, account["email"])
    victim = session_ids(client, account["tokens"])[False]
    _, response = client.delete(
        f"/api/v2/auth/sessions/{victim}", headers=bearer(account["tokens"])
    )
    assert response.status == 204
    assert_invalid_token(me(client, other["tokens"]["access_token"]))
    assert_invalid_token(refresh(client, other["tokens"]["refresh_token"]))
    assert me(client, account["tokens"]["access_token"]).status == 200


def test_another_users_session_is_404(client: ReusableClient) -> None:
    alice, bob = register(client), register(client)
    bobs = session_ids(client, bob["tokens"])[True]
    for session_id in (bobs, str(uuid.uuid4())):
        _, response = client.delete(
            f"/api/v2/auth/sessions/{session_id}", headers=bearer(alice["tokens"])
        )
        assert response.status == 404
        assert response.json["error"]["code"] == "not_found"
    assert me(client, bob["tokens"]["access_token"]).status == 200
    _, bad_id = client.delete("/api/v2/auth/sessions/not-a-uuid", headers=bearer(alice["tokens"]))
    assert bad_id.status == 404
    assert bad_id.json["error"]["message"] == "no such session"


def test_password_change_revokes_every_other_session(client: ReusableClient) -> None:
    account = register(client)
    other = login(client, account["email"])
    new_password = "a brand new passphrase"
    _, response = client.post(
        "/api/v2/auth/password",
        headers=bearer(account["tokens"]),
        json={"current_password": PASSWORD, "new_password": new_password},
    )
    assert response.status == 204
    assert me(client, account["tokens"]["access_token"]).status == 200
    assert_invalid_token(me(client, other["tokens"]["access_token"]))
    assert_invalid_token(refresh(client, other["tokens"]["refresh_token"]))
    _, old = client.post(
        "/api/v2/auth/login", json={"email": account["email"], "password": PASSWORD}
    )
    assert old.status == 401
    assert login(client, account["email"], new_password)


def test_password_change_needs_the_current_password(client: ReusableClient) -> None:
    account = register(client)
    _, wrong = client.post(
        "/api/v2/auth/password",
        headers=bearer(account["tokens"]),
        json={"current_password": "not my password", "new_password": "whatever works"},
    )
    assert wrong.status == 401
    assert wrong.json["error"]["code"] == "invalid_credentials"
    _, too_long = client.post(
        "/api/v2/auth/password",
        headers=bearer(account["tokens"]),
        json={"current_password": PASSWORD, "new_password": "b" * 73},
    )
    assert too_long.status == 422
    assert set(too_long.json["error"]["details"]["fields"]) == {"new_password"}


# -- users ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"is_admin": True},
        {"email": "new@example.com"},
        {"id": str(uuid.uuid4())},
        {"display_name": "x", "is_admin": True},
        {"display_name": "x" * 65},
    ],
)
def test_read_only_fields_cannot_be_patched(client: ReusableClient, body: dict[str, Any]) -> None:
    account = register(client)
    _, response = client.patch("/api/v2/users/me", headers=bearer(account["tokens"]), json=body)
    assert response.status == 422
    assert response.json["error"]["code"] == "validation_error"
    user = me(client, account["tokens"]["access_token"]).json
    assert user == account["user"]


def test_display_name_can_be_patched(client: ReusableClient) -> None:
    account = register(client)
    _, response = client.patch(
        "/api/v2/users/me", headers=bearer(account["tokens"]), json={"display_name": " Grace "}
    )
    assert response.status == 200
    assert response.json["display_name"] == "Grace"
    assert_no_secrets(response)


def test_preferences_round_trip(client: ReusableClient) -> None:
    account = register(client)
    headers = bearer(account["tokens"])
    _, default = client.get("/api/v2/users/me/preferences", headers=headers)
    assert default.json == {"base_currency": "USD", "watchlist": [], "webhook_url": None}
    wanted = {
        "base_currency": "usd",
        "watchlist": ["btc-usd", "ETH-USD", "BTC-USD"],
        "webhook_url": "https://93.184.215.14/coinlink",
    }
    _, saved = client.put("/api/v2/users/me/preferences", headers=headers, json=wanted)
    assert saved.status == 200, saved.text
    assert saved.json == {
        "base_currency": "USD",
        "watchlist": ["BTC-USD", "ETH-USD"],
        "webhook_url": "https://93.184.215.14/coinlink",
    }
    assert client.get("/api/v2/users/me/preferences", headers=headers)[1].json == saved.json


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"watchlist": ["BTC-USD", "NOPE-USD"]}, "watchlist.1"),
        ({"watchlist": [f"S{i}-USD" for i in range(101)]}, "watchlist"),
        ({"webhook_url": "ftp://example.com/x"}, "webhook_url"),
        ({"webhook_url": "not a url"}, "webhook_url"),
        ({"webhook_url": "https://user:pw@example.com/"}, "webhook_url"),
        ({"webhook_url": "http://a.com:99999/"}, "webhook_url"),
        ({"webhook_url": "https://example.com/a b"}, "webhook_url"),
        ({"webhook_url": "https://example.com/\x00"}, "webhook_url"),
        # A-labels the idna codec refuses (were 500s).
        ({"webhook_url": "https://xn--/x"}, "webhook_url"),
        ({"webhook_url": "https://xn--ab-.com/x"}, "webhook_url"),
        ({"webhook_url": "https://hooks.xn--55qx5d.xn--/x"}, "webhook_url"),
        ({"watchlist": ["btc-usd", "BTC-USD", "foo"]}, "watchlist.2"),
        ({"base_currency": "EUR"}, "base_currency"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_preferences_are_422(client: ReusableClient, body: dict[str, Any], field: str) -> None:
    account = register(client)
    _, response = client.put(
        "/api/v2/users/me/preferences", headers=bearer(account["tokens"]), json=body
    )
    assert response.status == 422, response.text
    assert field in response.json["error"]["details"]["fields"]


@pytest.mark.parametrize(
    ("body", "field", "fragments"),
    [
        ({"base_currency": "eur"}, "base_currency", ["only USD is served", "not converted"]),
        (
            {"webhook_url": "http://127.0.0.1:9000/hook"},
            "webhook_url",
            ["loopback", "COINLINK_WEBHOOK_ALLOW_PRIVATE=true"],
        ),
    ],
)
def test_preference_refusals_say_what_to_do(
    client: ReusableClient, body: dict[str, Any], field: str, fragments: list[str]
) -> None:
    account = register(client)
    _, response = client.put(
        "/api/v2/users/me/preferences", headers=bearer(account["tokens"]), json=body
    )
    assert response.status == 422, response.text
    why = response.json["error"]["details"]["fields"][field]
    assert all(fragment in why for fragment in fragments), why


def test_account_deletion(client: ReusableClient) -> None:
    account = register(client)
    other = login(client, account["email"])
    headers = bearer(account["tokens"])
    _, wrong = client.request(
        "/api/v2/users/me", http_method="delete", headers=headers, json={"password": "wrong one!"}
    )
    assert wrong.status == 401
    assert wrong.json["error"]["code"] == "invalid_credentials"
    _, response = client.request(
        "/api/v2/users/me", http_method="delete", headers=headers, json={"password": PASSWORD}
    )
    assert response.status == 204
    for tokens in (account["tokens"], other["tokens"]):
        assert_invalid_token(me(client, tokens["access_token"]))
        assert_invalid_token(refresh(client, tokens["refresh_token"]))
    _, gone = client.post(
        "/api/v2/auth/login", json={"email": account["email"], "password": PASSWORD}
    )
    assert gone.status == 401
    register(client, email=account["email"])  # the address is free again


def test_no_response_ever_contains_a_password_hash(client: ReusableClient) -> None:
    account = register(client)
    headers = bearer(account["tokens"])
    responses = [
        client.post("/api/v2/auth/login", json={"email": account["email"], "password": PASSWORD}),
        client.get("/api/v2/users/me", headers=headers),
        client.patch("/api/v2/users/me", headers=headers, json={"display_name": "n"}),
        client.get("/api/v2/users/me/preferences", headers=headers),
        client.get("/api/v2/auth/sessions", headers=headers),
        client.post(
            "/api/v2/auth/refresh", json={"refresh_token": account["tokens"]["refresh_token"]}
        ),
        client.post(
            "/api/v2/auth/login", json={"email": account["email"], "password": "wrong one!"}
        ),
    ]
    for _, response in responses:
        assert response.status < 500
        assert_no_secrets(response)


def test_openapi_documents_the_auth_and_user_routes(client: ReusableClient) -> None:
    document = client.get("/docs/openapi.json")[1].json
    paths = document["paths"]
    for path in (
        "/api/v2/auth/register",
        "/api/v2/auth/login",
        "/api/v2/auth/refresh",
        "/api/v2/auth/logout",
        "/api/v2/auth/sessions",
        "/api/v2/auth/password",
        "/api/v2/users/me",
        "/api/v2/users/me/preferences",
    ):
        assert path in paths, path
    register_body = paths["/api/v2/auth/register"]["post"]["requestBody"]
    ref = register_body["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert {"email", "password"} <= set(schema["properties"])


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        (
            "/api/v2/auth/register",
            {"email": "a@example.com", "password": "pass\x00word", "display_name": "x"},
            "password",
        ),
        (
            "/api/v2/auth/register",
            {"email": "b@example.com", "password": PASSWORD, "display_name": "Ada\x00"},
            "display_name",
        ),
        ("/api/v2/auth/login", {"email": "a\x00@example.com", "password": PASSWORD}, "email"),
    ],
)
def test_control_characters_are_422_not_500(
    client: ReusableClient, route: str, body: dict[str, Any], field: str
) -> None:
    _, response = client.post(route, json=body)
    assert response.status == 422, response.text
    assert field in response.json["error"]["details"]["fields"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"display_name": "bell\x07"}, "display_name"),
        ({"display_name": "nul\x00"}, "display_name"),
    ],
)
def test_control_characters_in_profile_updates(
    client: ReusableClient, body: dict[str, Any], field: str
) -> None:
    account = register(client)
    _, response = client.patch("/api/v2/users/me", headers=bearer(account["tokens"]), json=body)
    assert response.status == 422
    assert field in response.json["error"]["details"]["fields"]


def test_logout_marks_the_token_denied_until_it_expires(client: ReusableClient, app: Sanic) -> None:
    account = register(client)
    jti = jwt_claims(account["tokens"]["access_token"])["jti"]
    client.post("/api/v2/auth/logout", headers=bearer(account["tokens"]))

    async def remaining() -> float | None:
        bus = app.ctx.bus
        if not hasattr(bus, "redis"):
            return None
        return float(await bus.redis.pttl(f"{bus.prefix}kv:denied-jti:{jti}")) / 1000

    ttl = client._run(remaining())
    if ttl is not None:  # the Redis bus: the entry dies with the token, not before or after
        assert 890 < ttl <= 900
    else:
        assert client._run(app.ctx.bus.get(f"denied-jti:{jti}")) == b"1"


def jwt_claims(token: str) -> dict[str, Any]:
    import jwt

    return dict(jwt.decode(token, options={"verify_signature": False}))


def test_admin_tick_injection_is_off_unless_configured(client: ReusableClient) -> None:
    from models.accounts import User

    account = register(client)
    client._run(User.filter(id=account["user"]["id"]).update(is_admin=True))
    _, response = client.post(
        "/api/v2/admin/ticks",
        headers=bearer(account["tokens"]),
        json={"symbol": "BTC-USD", "price": "1"},
    )
    assert response.status == 404
    # The refusal names the setting that turns it on.
    assert response.json["error"]["details"] == {"setting": "COINLINK_ADMIN_TICKS"}
    assert "COINLINK_ADMIN_TICKS=true" in response.json["error"]["message"]
