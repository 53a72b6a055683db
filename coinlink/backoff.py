"""How long to wait before trying again: capped exponential backoff with equal jitter.

Every hand-written retry loop in CoinLink waits through this module; each picks its own
base and cap. After failure number ``n`` (1 = the first) the ceiling is
``d = min(cap, base * 2**(n-1))`` and the wait is drawn uniformly from ``[d/2, d]``.
(redis-py's own command retries in :mod:`coinlink.bus.redis_bus` are the library's.)

Equal jitter, not full jitter (``[0, d]``): the guaranteed half keeps a failing peer from
being asked again almost at once (full jitter can draw ~0 and spin); the random half spreads
the retries of many processes that failed together (a Redis restart seen by every worker)
instead of sending them back in lockstep.

:func:`delay` is the pure schedule, for callers that keep the failure count themselves (a
webhook's attempt number lives in the database); :class:`Backoff` counts for a loop.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff", "delay"]

# 2**64 times any sane base is far past every cap; a larger exponent would overflow a float.
_MAX_EXPONENT = 64


def delay(
    failures: int,
    *,
    base_s: float,
    cap_s: float,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after failure number ``failures`` (1 = the first), in ``[d/2, d]``.

    ``rng`` returns a float in ``[0, 1)``; tests pass a constant to pin the draw.
    """
    if failures < 1:
        raise ValueError("failures count from 1")
    ceiling = min(cap_s, base_s * 2.0 ** min(failures - 1, _MAX_EXPONENT))
    return ceiling / 2 + rng() * ceiling / 2


class Backoff:
    """The waits of one retry loop: :meth:`next` after each failure, :meth:`reset` once healthy.

    Not shared between tasks: each loop owns one.
    """

    def __init__(
        self, base_s: float, cap_s: float, *, rng: Callable[[], float] = random.random
    ) -> None:
        if not 0 < base_s <= cap_s:
            raise ValueError("need 0 < base_s <= cap_s")
        self.base_s = base_s
        self.cap_s = cap_s
        self._rng = rng
        self._failures = 0

    @property
    def failures(self) -> int:
        """Failures counted since the last :meth:`reset`."""
        return self._failures

    def next(self) -> float:
        """Count one more failure and return how long to wait before the next try."""
        self._failures += 1
        return delay(self._failures, base_s=self.base_s, cap_s=self.cap_s, rng=self._rng)

    def reset(self) -> None:
        """The operation works again: the next failure waits the shortest time."""
        self._failures = 0
