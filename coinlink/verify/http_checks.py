"""The checks made over plain HTTP: probes, response headers, auth, metrics."""

from __future__ import annotations

import uuid

from coinlink.verify.runner import (
    Account,
    Deployment,
    Failed,
    Skipped,
    bearer,
    describe,
    expect,
)

API_PATH = "/api/v2/market/tickers"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": None,  # present, any value
    "Referrer-Policy": None,
    "Content-Security-Policy": None,
}
RATE_LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
FOREIGN_ORIGIN = "https://coinlink-verify.invalid"


async def health(deployment: Deployment) -> str:
    body = expect(await deployment.http.get("/health"), 200).json()
    if body.get("status") != "ok":
        raise Failed(f"/health says {body.get('status')!r}")
    return f"ok, version {body.get('version')}, up {body.get('uptime_s')} s"


async def readiness(deployment: Deployment) -> str:
    response = await deployment.http.get("/readyz")
    body = response.json()
    checks = body.get("checks", {})
    states = ", ".join(f"{name} {check.get('status')}" for name, check in checks.items())
    if response.status_code != 200 or body.get("status") != "ready":
        raise Failed(f"/readyz {response.status_code} {body.get('status')}: {states}")
    return states


async def security_headers(deployment: Deployment) -> str:
    response = await deployment.http.get(API_PATH)
    wrong = [
        name
        for name, value in SECURITY_HEADERS.items()
        if name not in response.headers or (value and response.headers[name] != value)
    ]
    if wrong:
        raise Failed(f"GET {API_PATH}: missing or wrong {', '.join(wrong)}")
    return ", ".join(SECURITY_HEADERS)


async def cors(deployment: Deployment) -> str:
    response = await deployment.http.get(API_PATH, headers={"origin": FOREIGN_ORIGIN})
    allowed = response.headers.get("access-control-allow-origin")
    if allowed is not None:
        raise Failed(
            f"the foreign origin {FOREIGN_ORIGIN} got Access-Control-Allow-Origin {allowed}"
        )
    return f"{FOREIGN_ORIGIN} gets no Access-Control-Allow-Origin"


async def rate_limit_headers(deployment: Deployment) -> str:
    response = await deployment.http.get(API_PATH)
    missing = [name for name in RATE_LIMIT_HEADERS if name not in response.headers]
    if missing:
        raise Failed(f"GET {API_PATH}: no {', '.join(missing)}")
    return ", ".join(
        f"{name.split('-')[1]} {response.headers[name]}" for name in RATE_LIMIT_HEADERS
    )


async def auth_round_trip(deployment: Deployment) -> str:
    """Register, login, refresh (the spent refresh token then refused), logout (the access
    token then refused). The user stays for the alert check; the run deletes it."""
    http = deployment.http
    account = Account(f"coinlink-verify-{uuid.uuid4().hex[:12]}@example.com")
    credentials = {"email": account.email, "password": account.password}
    registered = await http.post("/api/v2/auth/register", json=credentials)
    if 400 <= registered.status_code < 500 and "closed" in registered.text.lower():
        raise Skipped(f"registration is closed ({describe(registered)})")
    first = expect(registered, 201).json()["tokens"]
    deployment.account = account
    second = expect(await http.post("/api/v2/auth/login", json=credentials), 200).json()["tokens"]
    spent = {"refresh_token": second["refresh_token"]}
    expect(await http.post("/api/v2/auth/refresh", json=spent), 200)
    reused = await http.post("/api/v2/auth/refresh", json=spent)
    if reused.status_code != 401:
        raise Failed(f"a spent refresh token was accepted: {describe(reused)}")
    headers = bearer(first["access_token"])
    expect(await http.post("/api/v2/auth/logout", headers=headers), 204)
    after = await http.get("/api/v2/users/me", headers=headers)
    if after.status_code != 401:
        raise Failed(f"the access token still works after logout: {describe(after)}")
    return "register, login, refresh (spent token refused), logout (token refused)"


async def metrics_not_public(deployment: Deployment) -> str:
    anonymous = await deployment.http.get("/metrics")
    if anonymous.status_code not in (401, 404):
        raise Failed(
            f"GET /metrics without credentials -> {anonymous.status_code}: "
            "set COINLINK_METRICS_TOKEN"
        )
    token = deployment.target.metrics_token
    if token is None:
        return f"{anonymous.status_code} without credentials (no --metrics-token to try)"
    expect(await deployment.http.get("/metrics", headers=bearer(token)), 200)
    return f"{anonymous.status_code} without credentials, 200 with the token"
