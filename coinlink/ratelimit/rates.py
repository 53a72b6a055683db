"""What a rate-limit policy is (:class:`Rate`) and what a decision says (:class:`Decision`).

Rates are exact in integer microseconds (see :mod:`coinlink.ratelimit.gcra`); each also
fixes the largest slice a process takes from Redis at once (:func:`slice_size`, see
:mod:`coinlink.ratelimit.slices`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, NamedTuple

US: Final = 1_000_000  # microseconds per second

# Slices: n = min(_SLICE_MAX, limit // _SLICE_DIVISOR), at least 1 (coinlink.ratelimit.slices).
_SLICE_DIVISOR: Final = 20
_SLICE_MAX: Final = 1_000


def slice_size(limit: int) -> int:
    """Units a process takes from Redis at once for a policy of ``limit`` per period.

    1 (an exact Redis decision per request) for every ``limit < 40``, then ``limit // 20``
    (a twentieth of the burst), at most 1,000.
    """
    return max(1, min(_SLICE_MAX, limit // _SLICE_DIVISOR))


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` requests per ``period_s`` seconds."""

    limit: int
    period_s: float
    interval_us: int = field(init=False, repr=False, compare=False)
    capacity_us: int = field(init=False, repr=False, compare=False)
    expiry_ms: int = field(init=False, repr=False, compare=False)
    slice_units: int = field(init=False, repr=False, compare=False)
    tag: str = field(init=False, repr=False, compare=False)
    """``limit/period``, part of the key's name in Redis: a changed rate starts afresh."""

    def __post_init__(self) -> None:
        if self.limit < 1 or not self.period_s > 0:
            raise ValueError(f"invalid rate {self.limit}/{self.period_s}")
        # Rounded down: a client pacing at exactly limit/period is never refused.
        interval = max(1, round(self.period_s * US) // self.limit)
        object.__setattr__(self, "interval_us", interval)
        object.__setattr__(self, "capacity_us", interval * self.limit)
        object.__setattr__(self, "expiry_ms", -(-interval * self.limit // 1000))
        object.__setattr__(self, "slice_units", slice_size(self.limit))
        object.__setattr__(self, "tag", f"{self.limit}/{self.period_s:g}")


class Decision(NamedTuple):
    """One limiter's answer. ``reset_s``: until the budget is whole; ``retry_after_s``: 0
    when allowed, else until the next request would be.

    A named tuple rather than a frozen dataclass: one is made per request, and a frozen
    dataclass's ``__init__`` (an ``object.__setattr__`` per field) costs three times as much.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float
