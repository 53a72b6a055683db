"""``Retry-After`` as servers and proxies send it (RFC 9110): seconds or an HTTP date."""

from __future__ import annotations

import time
from email.utils import formatdate

from coinlink_client.rest import _retry_after


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    assert _retry_after("7") == 7.0
    assert _retry_after(None) is None
    soon = _retry_after(formatdate(time.time() + 30, usegmt=True))
    assert soon is not None and 25 <= soon <= 30
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # already past
    assert _retry_after("soon") is None  # not a wait the client can honour
