"""The ingest lease as Redis holds it, read straight from Redis (what a test can trust)."""

from __future__ import annotations

import redis


def lease(redis_url: str, env: dict[str, str]) -> tuple[bytes | None, int, int]:
    """The ingest lease (``b"<token>:<holder>"``, None when free), the ms it has left, and
    Redis's clock in ms."""
    client = redis.Redis.from_url(redis_url)
    try:
        key = env["COINLINK_REDIS_PREFIX"] + "lease:ingest"
        with client.pipeline(transaction=True) as pipe:
            value, left_ms, (seconds, micros) = pipe.get(key).pttl(key).time().execute()
    finally:
        client.close()
    return value, left_ms, seconds * 1000 + micros // 1000


def holder(lease_value: bytes) -> str:
    return lease_value.decode().split(":", 1)[1]  # b"<token>:<holder>"
