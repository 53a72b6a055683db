"""The names the Redis bus gives its keys and channels, on one server and on a cluster,
and the URLs of a cluster's nodes."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from coinlink.bus.redis_bus import Keys
from coinlink.redis_calls import is_cluster, node_url


def test_one_server_keeps_the_names_it_always_had() -> None:
    keys = Keys("app:", cluster=False)
    assert [keys.seq("ticker:BTC-USD"), keys.history("ticker:BTC-USD")] == [
        "app:seq:ticker:BTC-USD",
        "app:hist:ticker:BTC-USD",
    ]
    assert keys.channel("tickers") == "app:ch:tickers"
    assert (keys.lease("ingest"), keys.fence, keys.kv("k")) == (
        "app:lease:ingest",
        "app:lease-fence",
        "app:kv:k",
    )
    assert keys.kv("revoked-session:s1", group="u:7") == "app:kv:revoked-session:s1"
    assert keys.publish_command == "PUBLISH"
    assert keys.channel_name(b"app:ch:tickers") == "tickers"


def test_on_a_cluster_what_one_script_touches_shares_a_slot() -> None:
    keys = Keys("app:", cluster=True)
    for channel in ["ticker:BTC-USD", "notifications:7f3c", "tickers"]:
        names = [keys.seq(channel), keys.history(channel), keys.channel(channel)]
        assert {key_slot(name.encode()) for name in names} == {key_slot(channel.encode())}
        assert keys.channel_name(keys.channel(channel).encode()) == channel
    leases = [keys.lease("ingest"), keys.lease("webhooks"), keys.fence]
    assert len({key_slot(name.encode()) for name in leases}) == 1
    assert keys.publish_command == "SPUBLISH"
    # A key group is one slot, whatever the keys; different groups spread.
    grouped = [keys.kv("denied-jti:j1", "u:7"), keys.kv("user-version:7", "u:7")]
    assert {key_slot(name.encode()) for name in grouped} == {key_slot(b"u:7")}
    assert key_slot(b"u:7") != key_slot(b"u:8")
    # Channels spread over the slots (else one shard would carry every channel).
    assert key_slot(keys.seq("ticker:BTC-USD").encode()) != key_slot(keys.seq("x").encode())


@pytest.mark.parametrize("name", [b"app:ch:tickers", b"other:ch:{tickers}", "app:ch:{x}", b"app:x"])
def test_a_cluster_ignores_channels_that_are_not_its_own(name: object) -> None:
    assert Keys("app:", cluster=True).channel_name(name) is None


def test_a_cluster_prefix_may_not_hold_a_hash_tag() -> None:
    with pytest.raises(ValueError, match="must not contain"):
        Keys("a{b}:", cluster=True)
    with pytest.raises(ValueError, match="must not contain"):
        Keys("a:", cluster=True).kv("k", group="u:{7}")


def test_a_cluster_url_and_its_nodes() -> None:
    assert is_cluster("redis+cluster://h:1") and is_cluster("rediss+cluster://h:1")
    assert not is_cluster("redis://h:1/0")
    url = "rediss+cluster://user:p%40ss@seed:7000/0?ssl_cert_reqs=none"
    assert node_url(url) == "rediss://user:p%40ss@seed:7000/0?ssl_cert_reqs=none"
    assert (
        node_url(url, "10.0.0.5:7003") == "rediss://user:p%40ss@10.0.0.5:7003/0?ssl_cert_reqs=none"
    )
    assert node_url("redis+cluster://seed:7000", "n:7001") == "redis://n:7001"
