"""Rate limiting: GCRA in Redis shared by every instance, spent locally in slices.

:mod:`~coinlink.ratelimit.rates` (a policy's rate, a decision), :mod:`~coinlink.ratelimit.gcra`
(the algorithm; the in-process limiter), :mod:`~coinlink.ratelimit.slices` (budget taken from
Redis in slices, cached refusals), :mod:`~coinlink.ratelimit.limiter` (Redis, its breaker and
the fallback), :mod:`~coinlink.ratelimit.policies` (the named policies). The HTTP middleware
that applies them is :mod:`coinlink.http.ratelimit`.
"""

from coinlink.ratelimit.gcra import LocalGCRA, gcra
from coinlink.ratelimit.limiter import DEFAULT_PREFIX, RateLimiter
from coinlink.ratelimit.policies import POLICY_NAMES, Policies
from coinlink.ratelimit.rates import Decision, Rate, slice_size
from coinlink.ratelimit.slices import SliceTable

__all__ = [
    "DEFAULT_PREFIX",
    "POLICY_NAMES",
    "Decision",
    "LocalGCRA",
    "Policies",
    "Rate",
    "RateLimiter",
    "SliceTable",
    "gcra",
    "slice_size",
]
