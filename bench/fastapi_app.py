"""The comparison stack: what a seed would build the same endpoints with, FastAPI + Redis.

Idiomatic FastAPI on uvicorn (run with the same worker count as CoinLink): the ticker is a
JSON string read from Redis (``BENCH_TICKER_KEY``, kept fresh by the bench from CoinLink's
own ticker), ``/users/me`` verifies the CoinLink access token with PyJWT and reads the user
from PostgreSQL through an asyncpg pool, candles are read from CoinLink's ``candles`` table.
No rate limiter, no access log, no metrics: the bare minimum of each request.

    BENCH_DATABASE_URL=postgres://... BENCH_REDIS_URL=redis://... BENCH_JWT_SECRET=...
    BENCH_TICKER_KEY=... .venv/bin/uvicorn bench.fastapi_app:app --workers 2 --no-access-log
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Annotated, Any

import asyncpg
import jwt
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response

MINUTE_MS = 60_000


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    dsn = "postgresql://" + os.environ["BENCH_DATABASE_URL"].split("://", 1)[1]
    app.state.db = await asyncpg.create_pool(dsn, min_size=2, max_size=10)
    app.state.redis = aioredis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    try:
        yield
    finally:
        await app.state.db.close()
        await app.state.redis.aclose()


app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/health")
async def health() -> dict[str, Any]:
    return {"status": "ok", "version": "0", "uptime_s": 0}


@app.get("/api/v2/market/tickers/{symbol}")
async def ticker(symbol: str, request: Request) -> Response:
    body = await request.app.state.redis.get(os.environ["BENCH_TICKER_KEY"])
    if body is None or symbol != "BTC-USD":
        raise HTTPException(404, "unknown symbol")
    return Response(body, media_type="application/json")


async def claims(authorization: Annotated[str, Header()] = "") -> dict[str, Any]:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        raise HTTPException(401, "bearer token required")
    try:
        decoded: dict[str, Any] = jwt.decode(
            token,
            os.environ["BENCH_JWT_SECRET"],
            algorithms=["HS256"],
            audience="coinlink-api",
            issuer="coinlink",
        )
    except jwt.InvalidTokenError as exc:
        raise HTTPException(401, "invalid token") from exc
    return decoded


@app.get("/api/v2/users/me")
async def me(request: Request, token: Annotated[dict[str, Any], Depends(claims)]) -> dict[str, Any]:
    row = await request.app.state.db.fetchrow(
        "SELECT id, email, display_name, is_admin, created_at FROM users WHERE id = $1",
        token["sub"],
    )
    if row is None:
        raise HTTPException(401, "unknown user")
    return {
        "id": str(row["id"]),
        "email": row["email"],
        "display_name": row["display_name"],
        "is_admin": row["is_admin"],
        "created_at": row["created_at"].isoformat(),
    }


def decimal_str(value: Decimal) -> str:
    return format(value.normalize(), "f")


@app.get("/api/v2/market/candles/{symbol}")
async def candles(
    symbol: str, request: Request, interval: str = "1m", limit: Annotated[int, Query()] = 500
) -> dict[str, Any]:
    rows = await request.app.state.db.fetch(
        "SELECT open_time, open, high, low, close, volume, trades FROM candles "
        "WHERE symbol = $1 AND interval = $2 ORDER BY open_time DESC LIMIT $3",
        symbol,
        interval,
        limit,
    )
    items = [
        {
            "symbol": symbol,
            "interval": interval,
            "open_time": row["open_time"],
            "close_time": row["open_time"] + MINUTE_MS,
            "open": decimal_str(row["open"]),
            "high": decimal_str(row["high"]),
            "low": decimal_str(row["low"]),
            "close": decimal_str(row["close"]),
            "volume": decimal_str(row["volume"]),
            "trades": row["trades"],
            "closed": True,
        }
        for row in reversed(rows)
    ]
    return {"items": items}
