"""Price-alert evaluation: a pure, in-memory engine (no database, no I/O, no clock).

The owner (the ingest leader) loads alerts with ``add``, feeds every tick to ``on_tick`` and
acts on the returned ``Firing`` list: it marks one-shot alerts triggered, records
``last_fired_ts`` of repeating ones and sends the notifications. Time is market time: the
tick's ``ts`` in milliseconds, non-decreasing per symbol.

Semantics
---------
- ``above`` fires on a tick with ``price >= threshold``; ``below`` on ``price <= threshold``.
- ``pct_change``: per symbol the engine keeps a rolling price history at 1-second resolution,
  one sample per second holding the last price seen in that second and that tick's ``ts``
  (the current tick is the sample of its own second), covering the longest window of
  ``PCT_WINDOWS`` (24 h). The move of a tick over a window of ``window_s`` seconds is
  ``|price - ref| / ref * 100`` where ``ref`` is the price of the first sample with
  ``ts >= tick.ts - window_s * 1000``: the oldest price still inside the window, or with less
  history than the window the oldest price known (on a symbol's first tick, its own price:
  move 0). The alert fires when ``move >= threshold`` (a percentage, ``Decimal("2.5")``).
  The comparison is exact (``|price - ref| * 100 >= threshold * ref`` in exact decimal
  arithmetic); ``Firing.move_pct`` reports the move rounded to 28 significant digits.
- A one-shot alert (``repeat=False``) fires once and leaves the engine.
- A repeating alert, after firing, re-arms once BOTH (a) the price has gone back across the
  threshold (``above``: a tick with ``price < threshold``; ``below``: ``price > threshold``;
  ``pct_change``: a tick whose move is ``< threshold``) and (b) its cooldown has passed (a
  tick with ``ts >= last_fired_ts + cooldown_s * 1000``), in either order. On each tick
  re-arming is evaluated before firing: a tick that completes (b) after (a) happened may fire
  the alert again if its price meets the condition; a tick that is itself the crossing back
  never fires (its price does not meet the condition, by definition).
- Firings of one tick are returned in ``seq`` order (ties, which the owner should not create,
  by id). An alert added between ticks is first evaluated on its symbol's next tick.
- ``add`` with a known id replaces that alert. State restored from the database: a repeating
  alert with ``last_fired_ts`` set is loaded as fired (cooling until
  ``last_fired_ts + cooldown_s * 1000``, waiting to cross back unless ``crossed_back``);
  without it, armed. Inconsistent specs raise ``ValueError`` (see ``AlertEngine.add``).

Design
------
Nothing is scanned per tick. Per symbol, each kind of alert (``above``, ``below``, and
``pct_change`` per window) is a group of two sorted lists of ``(threshold, seq, id, alert)``:
the armed alerts, and the fired repeating alerts waiting to cross back. A tick fires a prefix
(above: thresholds <= price; pct: thresholds <= move) or suffix (below: thresholds >= price)
of an armed list and re-arms a suffix or prefix of a waiting list, found by bisection; one
comparison with the first or last element skips the bisection on the common tick where
nothing happens. Fired repeating alerts also sit in a per-symbol heap keyed by the time their
cooldown ends (per symbol because ``ts`` only orders within a symbol); removals leave their
heap entry behind, marked stale, and the heap is rebuilt when half of it is stale. So a tick
costs O(windows in use x log n + alerts that fire or change state), and ``add``/``remove``
O(log n). The price history is a ring of 86,402 samples of 17 bytes (ts, and the price as an
int64 coefficient and int8 exponent), about 1.4 MB per symbol allocated at once: memory does
not grow with uptime (a list of Decimals grew ~120 bytes a second per symbol for 24 h, which
a soak took for a leak). It is kept for every symbol seen, so an alert added later measures
its move over history it did not witness, as one loaded at startup would.
"""

from __future__ import annotations

import heapq
import itertools
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Any, Final, Literal, get_args

from sortedcontainers import SortedList

Condition = Literal["above", "below", "pct_change"]
CONDITIONS: Final = frozenset(get_args(Condition))
PCT_WINDOWS: Final = (60, 300, 900, 3600, 14400, 86400)

_HISTORY_MS: Final = max(PCT_WINDOWS) * 1000
# Probe (value, _INF) sorts after every entry (value, seq, ...) and before (bigger, ...).
_INF: Final = float("inf")
# Exact sums and products (libmpdec sizes results by their digits, not by prec).
_EXACT: Final = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
# The reported move, independent of the caller's thread-local context.
_MOVE: Final = Context(prec=28)
_HUNDRED: Final = Decimal(100)
# History: a sample per second over the longest window, and the current second's.
_SLOTS: Final = _HISTORY_MS // 1000 + 2
_INT64: Final = 1 << 63
_MAX_EXPONENT: Final = 127
_WIDE: Final = -128  # an exponent that marks a price kept as a Decimal (_History.wide)


@dataclass(frozen=True, slots=True)
class AlertSpec:
    """What the engine needs of an alert, with its state when loaded from the database."""

    id: str  # UUID string
    seq: int  # creation order, unique: ties within one tick fire in seq order
    symbol: str
    condition: Condition
    threshold: Decimal  # price for above/below; percent (Decimal("2.5")) for pct_change
    window_s: int | None  # pct_change only, one of PCT_WINDOWS
    repeat: bool
    cooldown_s: int
    last_fired_ts: int | None = None  # ms, market time of its last firing (repeating only)
    crossed_back: bool = False  # fired, and the price has since gone back across


@dataclass(frozen=True, slots=True)
class Firing:
    alert_id: str
    seq: int
    symbol: str
    condition: str
    threshold: Decimal
    price: Decimal
    ts: int  # the tick's, ms: the alert's new last_fired_ts
    move_pct: Decimal | None  # pct_change: the move that fired it


class _Alert:
    """An alert's live state. Armed: in group.armed. Fired and not crossed back: in
    group.back. ``heaped``: its cooldown entry in the symbol's heap is current."""

    __slots__ = ("armed", "crossed", "group", "heaped", "spec")

    def __init__(self, spec: AlertSpec, group: _Group) -> None:
        self.spec = spec
        self.group = group
        self.armed = True
        self.crossed = False
        self.heaped = False


# (threshold, seq, id, alert): tuples compare in C; (seq, id) is unique, so the alert itself
# is never compared. The alert does not keep its entry (that would be a reference cycle per
# alert for the garbage collector); _entry rebuilds an equal one.
_Entry = tuple[Decimal, int, str, _Alert]


def _entry(alert: _Alert) -> _Entry:
    spec = alert.spec
    return (spec.threshold, spec.seq, spec.id, alert)


class _Group:
    """The alerts of one symbol and one kind (above, below, or pct_change over one window)."""

    __slots__ = ("armed", "back")

    def __init__(self) -> None:
        self.armed: Any = SortedList()  # of _Entry (sortedcontainers is untyped)
        self.back: Any = SortedList()  # fired repeating alerts waiting to cross back

    def __bool__(self) -> bool:
        return bool(self.armed) or bool(self.back)

    def rearm(self, crossed: list[_Entry]) -> None:
        """Alerts that just crossed back: armed now if cooled, else when their cooldown ends."""
        ready = []
        for entry in crossed:
            alert = entry[3]
            alert.crossed = True
            if not alert.heaped:
                alert.armed = True
                ready.append(entry)
        if ready:
            self.armed.update(ready)


class _History:
    """A symbol's 1-second price samples over the longest window, in a ring allocated whole.

    Memory is fixed from the symbol's first tick (about 1.4 MB: ``_SLOTS`` x 17 bytes) rather
    than growing with uptime until the window is full. A sample is its tick's ``ts`` and its
    price as an int64 coefficient and int8 exponent, exactly; a price that does not fit
    (more than 18 digits, a far exponent) is kept as a Decimal in ``wide``. The current
    second's price stays a Decimal until the next second begins: ticks within a second only
    replace it. Samples are in time order from ``start``; a full ring drops its oldest,
    which is then older than every window.
    """

    __slots__ = (
        "count",
        "current",
        "decoded",
        "exponents",
        "last_second",
        "last_ts",
        "mantissas",
        "start",
        "times",
        "wide",
    )

    def __init__(self) -> None:
        self.times = array("q", bytes(8 * _SLOTS))
        self.mantissas = array("q", bytes(8 * _SLOTS))
        self.exponents = array("b", bytes(_SLOTS))
        self.wide: dict[int, Decimal] = {}  # slot -> price, for prices marked _WIDE
        # slot -> price decoded during the current second: once a second per window, not
        # once a tick. Cleared when a second begins (the ring may reuse a slot then).
        self.decoded: dict[int, Decimal] = {}
        self.start = 0  # slot of the oldest sample
        self.count = 0
        self.current = _HUNDRED  # the newest sample's price (placeholder until a tick)
        self.last_second: int | None = None
        self.last_ts: int | None = None

    def record(self, price: Decimal, ts: int) -> None:
        if self.last_ts is not None and ts < self.last_ts:
            raise ValueError(f"tick at {ts} after one at {self.last_ts}: ts must not go back")
        self.last_ts = ts
        second = ts // 1000
        if second == self.last_second:
            self.times[(self.start + self.count - 1) % _SLOTS] = ts
            self.current = price
            return
        if self.count:
            self._store((self.start + self.count - 1) % _SLOTS, self.current)
        self.decoded.clear()
        if self.count == _SLOTS:
            self.start = (self.start + 1) % _SLOTS
            self.count -= 1
        slot = (self.start + self.count) % _SLOTS
        self.times[slot] = ts
        self.count += 1
        self.current = price
        self.last_second = second

    def _store(self, slot: int, price: Decimal) -> None:
        if self.wide:
            self.wide.pop(slot, None)
        exponent = price.as_tuple().exponent
        if isinstance(exponent, int) and -_MAX_EXPONENT <= exponent <= _MAX_EXPONENT:
            mantissa = int(price.scaleb(-exponent, _EXACT))
            if -_INT64 <= mantissa < _INT64:
                self.mantissas[slot] = mantissa
                self.exponents[slot] = exponent
                return
        self.exponents[slot] = _WIDE
        self.wide[slot] = price

    def ref(self, cutoff: int) -> Decimal:
        """The price of the oldest sample with ``ts >= cutoff`` (``cutoff`` <= the last ts)."""
        times, start, end = self.times, self.start, self.start + self.count
        if end <= _SLOTS:
            slot = bisect_left(times, cutoff, start, end)
        elif times[_SLOTS - 1] >= cutoff:
            slot = bisect_left(times, cutoff, start, _SLOTS)
        else:
            slot = bisect_left(times, cutoff, 0, end - _SLOTS)
        if slot == (end - 1) % _SLOTS:
            return self.current
        price = self.decoded.get(slot)
        if price is None:
            exponent = self.exponents[slot]
            if exponent == _WIDE:
                return self.wide[slot]
            price = self.decoded[slot] = Decimal(self.mantissas[slot]).scaleb(exponent, _EXACT)
        return price


class _Book:
    """One symbol: its groups, its cooldown heap and its 1-second price history."""

    __slots__ = ("above", "below", "heap", "history", "pct", "stale")

    def __init__(self) -> None:
        self.above = _Group()
        self.below = _Group()
        self.pct: dict[int, _Group] = {}
        self.heap: list[tuple[int, int, _Alert]] = []  # (ready ts, order, alert)
        self.stale = 0  # heap entries of removed alerts
        self.history = _History()

    def group(self, spec: AlertSpec) -> _Group:
        if spec.condition == "above":
            return self.above
        if spec.condition == "below":
            return self.below
        assert spec.window_s is not None
        group = self.pct.get(spec.window_s)
        if group is None:
            group = self.pct[spec.window_s] = _Group()
        return group


def _fire_at_or_under(group: _Group, value: Decimal, fired: list[tuple[_Entry, Any]]) -> None:
    """``above``: re-arm those crossed back (threshold > price), fire threshold <= price."""
    back = group.back
    if back and back[-1][0] > value:
        i = back.bisect_left((value, _INF))
        crossed = back[i:]
        del back[i:]
        group.rearm(crossed)
    armed = group.armed
    if armed and armed[0][0] <= value:
        k = armed.bisect_left((value, _INF))
        fired.extend((entry, None) for entry in armed[:k])
        del armed[:k]


def _fire_at_or_over(group: _Group, value: Decimal, fired: list[tuple[_Entry, Any]]) -> None:
    """``below``: re-arm those crossed back (threshold < price), fire threshold >= price."""
    back = group.back
    if back and back[0][0] < value:
        k = back.bisect_left((value,))
        crossed = back[:k]
        del back[:k]
        group.rearm(crossed)
    armed = group.armed
    if armed and armed[-1][0] >= value:
        i = armed.bisect_left((value,))
        fired.extend((entry, None) for entry in armed[i:])
        del armed[i:]


def _fire_pct(group: _Group, price: Decimal, ref: Decimal, fired: list[tuple[_Entry, Any]]) -> None:
    """``pct_change`` over one window: as ``above``, on the move instead of the price.

    The move itself is rounded, so the bisection on it only approximates the boundary; it is
    then moved to the exact one with the exact test ``diff100 >= threshold * ref``.
    """
    diff100 = _EXACT.multiply(_EXACT.subtract(price, ref).copy_abs(), _HUNDRED)
    move: Decimal | None = None
    back = group.back
    if back and diff100 < _EXACT.multiply(back[-1][0], ref):
        move = _MOVE.divide(diff100, ref)
        i = back.bisect_left((move, _INF))
        while i > 0 and diff100 < _EXACT.multiply(back[i - 1][0], ref):
            i -= 1
        while i < len(back) and diff100 >= _EXACT.multiply(back[i][0], ref):
            i += 1
        crossed = back[i:]
        del back[i:]
        group.rearm(crossed)
    armed = group.armed
    if armed and diff100 >= _EXACT.multiply(armed[0][0], ref):
        if move is None:
            move = _MOVE.divide(diff100, ref)
        k = armed.bisect_left((move, _INF))
        while k < len(armed) and diff100 >= _EXACT.multiply(armed[k][0], ref):
            k += 1
        while k > 0 and diff100 < _EXACT.multiply(armed[k - 1][0], ref):
            k -= 1
        fired.extend((entry, move) for entry in armed[:k])
        del armed[:k]


def _fired_order(item: tuple[_Entry, Any]) -> tuple[int, str]:
    return item[0][1], item[0][2]


class AlertEngine:
    """Evaluates every alert against every tick; see the module docstring for the rules."""

    def __init__(self) -> None:
        self._alerts: dict[str, _Alert] = {}
        self._books: dict[str, _Book] = {}
        self._order = itertools.count()  # heap tie-break: entries never compare alerts

    def __len__(self) -> int:
        return len(self._alerts)

    def _book(self, symbol: str) -> _Book:
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = _Book()
        return book

    def add(self, spec: AlertSpec) -> None:
        """Add, or replace the alert with the same id. O(log n).

        Raises ``ValueError`` on an unknown condition, a threshold that is not a finite
        positive Decimal, a window on above/below or a pct_change window not in PCT_WINDOWS,
        a negative cooldown, and restored state that cannot be (``last_fired_ts`` on a
        one-shot alert, which its owner has marked triggered; ``crossed_back`` without
        ``last_fired_ts``).
        """
        _validate(spec)
        self.remove(spec.id)
        book = self._book(spec.symbol)
        alert = _Alert(spec, book.group(spec))
        if spec.last_fired_ts is None:
            alert.group.armed.add(_entry(alert))
        else:
            alert.armed = False
            alert.crossed = spec.crossed_back
            if not alert.crossed:
                alert.group.back.add(_entry(alert))
            # Even if the cooldown is over, the next tick re-arms it (before firing).
            self._cool(book, alert, spec.last_fired_ts + spec.cooldown_s * 1000)
        self._alerts[spec.id] = alert

    def remove(self, alert_id: str) -> None:
        """Forget an alert; unknown ids are ignored. O(log n)."""
        alert = self._alerts.pop(alert_id, None)
        if alert is None:
            return
        if alert.armed:
            alert.group.armed.remove(_entry(alert))
        elif not alert.crossed:
            alert.group.back.remove(_entry(alert))
        if alert.heaped:
            alert.heaped = False
            book = self._books[alert.spec.symbol]
            book.stale += 1
            if book.stale > 64 and book.stale * 2 > len(book.heap):
                book.heap = [item for item in book.heap if item[2].heaped]
                heapq.heapify(book.heap)
                book.stale = 0

    def _cool(self, book: _Book, alert: _Alert, ready: int) -> None:
        alert.heaped = True
        heapq.heappush(book.heap, (ready, next(self._order), alert))

    def on_tick(self, symbol: str, price: Decimal, ts: int) -> list[Firing]:
        """Evaluate one tick (``ts`` in ms, market time, non-decreasing per symbol)."""
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = _Book()
        book.history.record(price, ts)

        # Re-arm first: cooldowns that end at this tick, then (in each group) crossings back.
        heap = book.heap
        while heap and heap[0][0] <= ts:
            alert = heapq.heappop(heap)[2]
            if not alert.heaped:
                book.stale -= 1
                continue
            alert.heaped = False
            if alert.crossed:
                alert.armed = True
                alert.group.armed.add(_entry(alert))

        fired: list[tuple[_Entry, Any]] = []
        _fire_at_or_under(book.above, price, fired)
        _fire_at_or_over(book.below, price, fired)
        if book.pct:
            history = book.history
            for window_s, group in book.pct.items():
                if group:
                    ref = history.ref(ts - window_s * 1000)
                    _fire_pct(group, price, ref, fired)
        if not fired:
            return []

        fired.sort(key=_fired_order)
        firings = []
        for entry, move in fired:
            alert = entry[3]
            spec = alert.spec
            firings.append(
                Firing(spec.id, spec.seq, symbol, spec.condition, spec.threshold, price, ts, move)
            )
            if spec.repeat:
                alert.armed = False
                alert.crossed = False
                alert.group.back.add(entry)
                self._cool(book, alert, ts + spec.cooldown_s * 1000)
            else:
                del self._alerts[spec.id]
        return firings


def _validate(spec: AlertSpec) -> None:
    if spec.condition not in CONDITIONS:
        raise ValueError(f"alert {spec.id}: unknown condition {spec.condition!r}")
    if not (isinstance(spec.threshold, Decimal) and spec.threshold.is_finite()):
        raise ValueError(f"alert {spec.id}: threshold must be a finite Decimal")
    if spec.threshold <= 0:
        raise ValueError(f"alert {spec.id}: threshold must be positive")
    if spec.condition == "pct_change":
        if spec.window_s not in PCT_WINDOWS:
            raise ValueError(f"alert {spec.id}: window_s must be one of {PCT_WINDOWS}")
    elif spec.window_s is not None:
        raise ValueError(f"alert {spec.id}: window_s is for pct_change alerts only")
    if spec.cooldown_s < 0:
        raise ValueError(f"alert {spec.id}: negative cooldown")
    if spec.last_fired_ts is not None and not spec.repeat:
        raise ValueError(f"alert {spec.id}: a one-shot alert that fired is not loaded")
    if spec.crossed_back and spec.last_fired_ts is None:
        raise ValueError(f"alert {spec.id}: crossed_back without last_fired_ts")
