"""The per-user views answer only under the version they were filled under, expire, and
hold at most their bound (least recently used first out)."""

from __future__ import annotations

import redis.asyncio

from coinlink import channels
from coinlink.accounts.user_views import MAX_AGE_S, VERSION_TTL_S, UserViews, user_changed
from coinlink.bus import RedisBus

ME = ("u1", "profile")


def test_an_entry_serves_only_its_version_until_it_is_too_old() -> None:
    now = [0.0]
    views = UserViews(max_age_s=5, clock=lambda: now[0])
    views.put(ME, b"3", b'{"id":"u1"}')
    assert views.get(ME, b"3") == b'{"id":"u1"}'
    assert views.get(("u1", ("alerts", None, 50, None)), b"3") is None  # another read
    assert views.get(ME, b"4") is None  # changed since: read the database again
    assert len(views) == 0
    views.put(ME, b"4", b"{}")
    now[0] = 4.99
    assert views.get(ME, b"4") == b"{}"
    now[0] = 5.0
    assert views.get(ME, b"4") is None


def test_the_views_hold_at_most_their_bytes_least_recently_used_first_out() -> None:
    body = b"x" * 10_000
    views = UserViews(max_bytes=3 * 10_500)
    keys = [(f"u{n}", "profile") for n in range(4)]
    for key in keys[:3]:
        views.put(key, b"0", body)
    assert views.get(keys[0], b"0") == body
    views.put(keys[3], b"0", body)
    assert len(views) == 3 and views.bytes <= views.max_bytes
    assert views.get(keys[1], b"0") is None
    assert all(views.get(k, b"0") == body for k in (keys[0], keys[2], keys[3]))
    views.put(keys[0], b"1", body)  # refilled: counted once
    assert len(views) == 3 and views.bytes <= views.max_bytes
    views.put(("u9", "profile"), b"0", b"x" * views.max_bytes)  # larger than all: not kept
    assert len(views) == 3
    for key in keys[:3]:
        assert views.get(key, b"never") is None  # dropped: their bytes go with them
    assert len(views) == 1 and 10_000 < views.bytes < 10_500


async def test_a_users_version_expires_a_while_after_its_change(
    redis_url: str, bus_prefix: str
) -> None:
    """One bus key per user who ever changed anything would otherwise stay for ever."""
    assert VERSION_TTL_S > MAX_AGE_S  # entries go long before the version they were filled under
    bus = RedisBus(redis_url, prefix=bus_prefix)
    await bus.start()
    client = redis.asyncio.from_url(redis_url)
    try:
        await user_changed(bus, "u1")
        assert await bus.get(channels.user_version_key("u1")) == b"1"
        ttl_ms = await client.pttl(f"{bus_prefix}kv:{channels.user_version_key('u1')}")
        assert VERSION_TTL_S * 1000 - 60_000 < ttl_ms <= VERSION_TTL_S * 1000
    finally:
        await client.aclose()
        await bus.close()
