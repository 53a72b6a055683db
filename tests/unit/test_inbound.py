"""The inbound token bucket: a burst at once, then the rate."""

from __future__ import annotations

from coinlink.realtime.inbound import TokenBucket


def test_frames_are_allowed_up_to_the_burst_then_at_the_rate() -> None:
    bucket = TokenBucket(0.001, 3)  # a token every 1000 s: none comes back during the test
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    # A long quiet spell (at this rate, any pause) refills the bucket to the burst, no more.
    bucket.rate = 1e9
    assert bucket.take()
    bucket.rate = 0.001
    assert [bucket.take() for _ in range(3)] == [True, True, False]
