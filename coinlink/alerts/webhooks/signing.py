"""Signing a delivery: the HMAC receivers verify and the headers that carry it."""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

USER_AGENT: Final = "CoinLink-Webhooks/1"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``: receivers verify the exact bytes
    they got, and the timestamp inside the MAC lets them refuse replays of old deliveries."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def headers(delivery_id: str, timestamp: int, signature: str) -> dict[str, str]:
    """The headers of a delivery (``X-CoinLink-Delivery`` is the receiver's idempotency key)."""
    return {
        "X-CoinLink-Delivery": delivery_id,
        "X-CoinLink-Timestamp": str(timestamp),
        "X-CoinLink-Signature": signature,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
