"""Signing users up and crafting tokens in tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import httpx
import jwt
from sanic_testing.reusable import ReusableClient

from tests.support.apps import TEST_SECRET, ServerProcess

PASSWORD = "correct horse battery"
ISSUER = "coinlink"
AUDIENCE = "coinlink-api"


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


def register(
    client: ReusableClient, email: str | None = None, password: str = PASSWORD, **extra: Any
) -> dict[str, Any]:
    """Register and return ``{"user": ..., "tokens": ..., "email": ..., "password": ...}``."""
    email = email or new_email()
    _, response = client.post(
        "/api/v2/auth/register", json={"email": email, "password": password, **extra}
    )
    assert response.status == 201, response.text
    return {**response.json, "email": email, "password": password}


def login(client: ReusableClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    _, response = client.post("/api/v2/auth/login", json={"email": email, "password": password})
    assert response.status == 200, response.text
    return dict(response.json)


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"authorization": f"Bearer {tokens['access_token']}"}


async def signed_up(base_url: str) -> dict[str, Any]:
    """A new user of a running server (async tests: the loop keeps serving its sockets):
    the registration's body (``user``, ``tokens``) and its bearer ``headers``."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        response = await client.post(
            "/api/v2/auth/register", json={"email": new_email(), "password": PASSWORD}
        )
    assert response.status_code == 201, response.text
    body = dict(response.json())
    body["headers"] = bearer(body["tokens"])
    return body


def claims(**overrides: Any) -> dict[str, Any]:
    """Claims of a well-formed access token; override or drop (value None) any of them."""
    now = int(time.time())
    values = {
        "sub": str(uuid.uuid4()),
        "sid": str(uuid.uuid4()),
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 300,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "typ": "access",
        **overrides,
    }
    return {k: v for k, v in values.items() if v is not None}


def forge(
    payload: dict[str, Any],
    key: Any = TEST_SECRET,
    algorithm: str = "HS256",
    headers: dict[str, Any] | None = None,
) -> str:
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def make_admin(database_url: str, email: str) -> None:
    """Make an account an admin in the database (as an operator would)."""

    async def promote() -> None:
        conn = await asyncpg.connect("postgresql://" + database_url.split("://", 1)[1])
        try:
            await conn.execute("UPDATE users SET is_admin = true WHERE email = $1", email)
        finally:
            await conn.close()

    asyncio.run(promote())


def admin_headers(server: ServerProcess, database_url: str) -> dict[str, str]:
    """Bearer headers of a new user made admin in the database (as an operator would)."""
    email = new_email()
    response = httpx.post(
        server.base_url + "/api/v2/auth/register", json={"email": email, "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    make_admin(database_url, email)
    return {"authorization": f"Bearer {response.json()['tokens']['access_token']}"}
