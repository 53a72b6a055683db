"""The one interface every market-data source implements, and the parsing helpers they share.

A :class:`Provider` is an async source of :class:`~coinlink.market.types.Tick`:

* ``ticks()`` is an async generator that runs until the consumer stops iterating (or its
  task is cancelled). Network providers never let a transient problem escape: they count
  it, log it, reconnect and carry on. Only a programming or configuration error (a bad URL,
  an unreadable replay file) is raised, and that is raised at construction where possible.
  One consumer per provider: the generator owns the connection and the per-symbol state.
* ``backfill()`` returns OHLCV rows from the provider's REST history, or ``[]`` when it has
  none. A failed request raises :class:`ProviderError`: the caller decides whether to retry,
  and a silent ``[]`` would hide a hole in the candles.
* ``stats`` holds monotonically increasing counters (``malformed``, ``dropped``, ``gaps``,
  ``reconnects``, ``stalls``) that the ingest exports as Prometheus counters; every key exists
  from the start so the metrics can be registered at zero.

The helpers below turn untrusted upstream values (exchange frames, replay lines) into
``Decimal`` and ``int`` or raise :class:`MalformedError`, so each adapter's parser is a short
list of field reads and one ``except MalformedError`` counts every kind of bad input alike.
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Final

from coinlink.market.types import Tick

OHLCVRow = tuple[int, Decimal, Decimal, Decimal, Decimal, Decimal, int]
"""(open_time ms, open, high, low, close, volume, trades), oldest first."""

STAT_KEYS: Final[tuple[str, ...]] = ("malformed", "dropped", "gaps", "reconnects", "stalls")
"""``malformed``: frames/lines that could not be parsed; ``dropped``: well-formed but unwanted
(duplicate or out-of-order sequence, unconfigured symbol); ``gaps``: detected sequence jumps;
``reconnects``: connection attempts after the first; ``stalls``: watchdog timeouts."""

SYMBOL_RE: Final = re.compile(r"^[A-Z0-9]{2,10}-[A-Z0-9]{2,10}$")
# Anything larger is a broken feed, not a price; it would also upset later arithmetic.
_MAX_ADJUSTED_EXPONENT: Final = 15
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)


class ProviderError(Exception):
    """A provider could not do what was asked (e.g. a backfill request failed)."""


class MalformedError(ValueError):
    """One frame or line that cannot become a tick; the message names the field, not data."""


class Provider(abc.ABC):
    """A source of ticks; see the module docstring for the contract."""

    name: str = "unknown"

    def __init__(self) -> None:
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)

    @abc.abstractmethod
    def ticks(self) -> AsyncGenerator[Tick, None]:
        """Yield ticks until cancelled (implementations are ``async def`` generators).

        An ``AsyncGenerator`` (an ``AsyncIterator`` with ``aclose``): wrap the iteration in
        ``contextlib.aclosing`` so stopping it closes the connection at once, not whenever the
        generator is garbage-collected.
        """

    async def backfill(
        self, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> list[OHLCVRow]:
        """OHLCV rows with ``start_ms <= open_time <= end_ms``, oldest first ([] if none)."""
        return []

    def resume(self, prices: dict[str, Decimal]) -> None:
        """The last price of each symbol the previous ingest leader published, given before
        ``ticks()``: a made-up market continues from them; a real one has its own."""
        return None


def normalize_symbols(symbols: list[str]) -> list[str]:
    """Upper-cased, de-duplicated BASE-QUOTE symbols; raise ``ValueError`` for bad ones."""
    result = list(dict.fromkeys(s.strip().upper() for s in symbols))
    bad = [s for s in result if not SYMBOL_RE.match(s)]
    if bad:
        raise ValueError(f"not BASE-QUOTE symbols: {', '.join(bad)}")
    return result


def log_worthy(count: int) -> bool:
    """Whether the ``count``-th occurrence of a repeated problem deserves a log line.

    The first ten, then powers of two: a broken feed is visible at once without writing one
    line per frame (the counters carry the exact numbers).
    """
    return count <= 10 or count & (count - 1) == 0


def parse_decimal(value: object, field: str, *, positive: bool = True) -> Decimal:
    """A finite ``Decimal`` from a string or number: ``> 0`` if ``positive`` else ``>= 0``.

    ``bool`` is refused although it is an ``int``; floats go through ``repr`` so ``0.1``
    stays ``0.1``.
    """
    if isinstance(value, str | Decimal) or (isinstance(value, int) and not isinstance(value, bool)):
        source: str | int | Decimal = value
    elif isinstance(value, float):
        source = repr(value)
    else:
        raise MalformedError(f"{field}: not a number")
    try:
        result = Decimal(source)
    except (InvalidOperation, ValueError):
        raise MalformedError(f"{field}: not a number") from None
    if not result.is_finite():
        raise MalformedError(f"{field}: not finite")
    if result < 0 or (positive and result == 0):
        raise MalformedError(f"{field}: out of range")
    if result and result.adjusted() > _MAX_ADJUSTED_EXPONENT:
        raise MalformedError(f"{field}: out of range")
    return result


def parse_optional_price(value: object, field: str) -> Decimal | None:
    """A bid or ask: ``None`` when absent, empty or zero (an empty side of the book)."""
    if value is None or value == "":
        return None
    result = parse_decimal(value, field, positive=False)
    return result or None


def parse_int(value: object, field: str) -> int:
    """A non-negative integer from an ``int`` or a string of digits (never a ``bool``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        result = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        result = int(value)  # isascii: isdigit alone accepts "²", which int() refuses
    else:
        raise MalformedError(f"{field}: not an integer")
    if result < 0:
        raise MalformedError(f"{field}: negative")
    return result


def parse_iso_ms(value: object, field: str) -> int:
    """Milliseconds since the epoch from an ISO 8601 time (UTC when no offset is given)."""
    if not isinstance(value, str):
        raise MalformedError(f"{field}: not a time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise MalformedError(f"{field}: not a time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Integer arithmetic on timedeltas: exact, unlike ``timestamp() * 1000`` on a float.
    result = (moment - _EPOCH) // _ONE_MS
    if result < 0:
        raise MalformedError(f"{field}: before 1970")
    return result
