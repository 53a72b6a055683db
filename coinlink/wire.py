"""How values look on the wire, in REST bodies, socket frames and bus messages alike.

Decimals (prices, volumes, thresholds) are strings, exact: no exponent, no needless
trailing zeros, never rounded. Instants are epoch milliseconds (``ts``, candle times) or,
for records (accounts, alerts, notifications), ISO 8601 UTC with milliseconds and a ``Z``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal


def decimal_str(d: Decimal) -> str:
    """``d`` as a plain string: no exponent, no needless trailing zeros, no ``-0``."""
    if not d.is_finite():
        raise ValueError(f"cannot render {d!r}")
    # format "f" never rounds (unlike normalize(), which obeys the context precision).
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def iso_time(moment: datetime | None) -> str | None:
    """``2026-12-06T00:38:14.123Z``; None stays None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_ms() -> int:
    """The wall clock in epoch milliseconds, the unit of every ``ts`` on the wire."""
    return time.time_ns() // 1_000_000
