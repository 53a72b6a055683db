"""Replay recorded ticks from a CSV or JSON-lines file.

Both formats carry the same fields: ``ts`` (ms since the epoch, or an ISO 8601 time),
``symbol`` (BASE-QUOTE), ``price``, ``volume`` and the optional ``bid`` and ``ask``. A CSV
file starts with a header naming them (in any order); a JSON-lines file has one object per
line. The format comes from the suffix (``.csv``; ``.jsonl``, ``.ndjson``, ``.json``) or,
for any other name, from the first non-blank line.

Design:

* **Timing.** Tick *k* is delivered ``(ts_k - ts_0) / speed`` seconds after the first, on a
  schedule anchored at the start (so sleeping never accumulates drift) and gaps between
  timestamps are preserved; ``speed=0`` means as fast as possible (yielding to the event
  loop every few hundred ticks). A timestamp earlier than its predecessor is delivered at
  once rather than rejected: the downstream validator decides about order.
* **Malformed lines** (wrong field count, bad numbers, non-finite values, a bad symbol,
  invalid JSON) are counted in ``stats["malformed"]`` and skipped; the log names line
  numbers, at most a handful, never the content. Blank lines are ignored. A file whose
  header lacks a required column is a configuration error, raised at construction.
* **Looping.** With ``loop=True`` the file is played again and again; each pass is shifted
  forward by the file's span plus its mean tick gap, so timestamps keep increasing (candles
  built from a looped replay stay in order). Malformed lines are only counted on the first
  pass: the counter describes the file, not how often it was read.
* The file is read line by line (a replay file can be large); reading a local file is fast
  enough not to need a thread.
"""

from __future__ import annotations

import asyncio
import csv
import json
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import structlog

from coinlink.market.providers.base import (
    SYMBOL_RE,
    MalformedError,
    Provider,
    log_worthy,
    normalize_symbols,
    parse_decimal,
    parse_int,
    parse_iso_ms,
    parse_optional_price,
)
from coinlink.market.types import Tick

SAMPLE_PATH: Final = Path(__file__).with_name("sample_ticks.csv")
"""A few hundred ticks of BTC-USD, ETH-USD and SOL-USD shipped with the package."""

REQUIRED_FIELDS: Final = ("ts", "symbol", "price", "volume")
_JSON_SUFFIXES: Final = frozenset({".jsonl", ".ndjson", ".json"})
_YIELD_EVERY: Final = 256

log = structlog.get_logger(logger_name="coinlink.market.replay")


def _parse_ts(value: object) -> int:
    if isinstance(value, str) and not (value.strip().isascii() and value.strip().isdigit()):
        return parse_iso_ms(value.strip(), "ts")
    return parse_int(value, "ts")


def _to_tick(fields: dict[str, Any], source: str) -> Tick:
    symbol = fields.get("symbol")
    if not isinstance(symbol, str) or not SYMBOL_RE.match(symbol.strip().upper()):
        raise MalformedError("symbol: not BASE-QUOTE")
    return Tick(
        symbol=symbol.strip().upper(),
        price=parse_decimal(fields.get("price"), "price"),
        volume=parse_decimal(fields.get("volume"), "volume", positive=False),
        ts=_parse_ts(fields.get("ts")),
        bid=parse_optional_price(fields.get("bid"), "bid"),
        ask=parse_optional_price(fields.get("ask"), "ask"),
        source=source,
    )


def _is_json(path: Path) -> bool:
    if path.suffix.lower() == ".csv":
        return False
    if path.suffix.lower() in _JSON_SUFFIXES:
        return True
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                return line.lstrip().startswith("{")
    return False


def _check_header(path: Path) -> None:
    """Raise ``ValueError`` if a CSV file's header lacks a required column."""
    # errors="replace" as in iter_records: text is decoded a buffer at a time, so a bad byte
    # anywhere in the first few kilobytes would otherwise refuse the whole file here.
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        header = next(csv.reader(handle), [])
    names = [name.strip().lower() for name in header]
    missing = [name for name in REQUIRED_FIELDS if name not in names]
    if missing:
        raise ValueError(f"{path}: CSV header lacks {', '.join(missing)}")


def iter_records(path: Path, source: str = "replay") -> Iterator[tuple[int, Tick | None]]:
    """(line number, tick) for every non-blank data line; ``None`` for a malformed one."""
    if _is_json(path):
        # errors="replace": an invalid byte spoils its line (then malformed), not the file.
        with path.open(encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    # parse_float=Decimal: a JSON number like 0.1 keeps its exact value.
                    obj = json.loads(line, parse_float=Decimal)
                    if not isinstance(obj, dict):
                        raise MalformedError("not an object")
                    yield number, _to_tick(obj, source)
                except ValueError:  # MalformedError and JSONDecodeError alike
                    yield number, None
        return
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.reader(handle)
        header = [name.strip().lower() for name in next(reader, [])]
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error:  # e.g. a field over the csv module's size limit
                yield reader.line_num, None
                continue
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                yield reader.line_num, None
                continue
            try:
                yield reader.line_num, _to_tick(dict(zip(header, row, strict=True)), source)
            except MalformedError:
                yield reader.line_num, None


class ReplayProvider(Provider):
    """Plays a recorded file at ``speed`` times real time; see the module docstring."""

    name = "replay"

    def __init__(
        self,
        path: str | Path,
        speed: float = 1.0,
        loop: bool = False,
        symbols: list[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``symbols``, if given, keeps only those symbols; ``clock`` (seconds) paces."""
        super().__init__()
        if speed < 0:
            raise ValueError("speed must be >= 0 (0 means as fast as possible)")
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"no replay file at {self.path}")
        if not _is_json(self.path):
            _check_header(self.path)
        self.speed = speed
        self.loop = loop
        self.symbols = set(normalize_symbols(symbols)) if symbols else None
        self._clock = clock

    async def ticks(self) -> AsyncGenerator[Tick, None]:
        offset = 0  # added to every timestamp of the current pass
        first_pass = True
        anchor_ms: int | None = None
        anchor_s = 0.0
        emitted = 0
        while True:
            first_ts: int | None = None
            last_ts = 0
            good = 0
            for number, tick in iter_records(self.path, self.name):
                if tick is None:
                    if first_pass:
                        self.stats["malformed"] += 1
                        if log_worthy(self.stats["malformed"]):
                            log.warning("replay.malformed_line", path=str(self.path), line=number)
                    continue
                good += 1
                if first_ts is None:
                    first_ts = tick.ts
                last_ts = tick.ts
                if self.symbols is not None and tick.symbol not in self.symbols:
                    continue
                if offset:
                    tick = Tick(
                        tick.symbol,
                        tick.price,
                        tick.volume,
                        tick.ts + offset,
                        tick.bid,
                        tick.ask,
                        tick.source,
                    )
                if anchor_ms is None:
                    anchor_ms, anchor_s = tick.ts, self._clock()
                if self.speed > 0:
                    delay = anchor_s + (tick.ts - anchor_ms) / 1000 / self.speed - self._clock()
                    if delay > 0:
                        await asyncio.sleep(delay)
                emitted += 1
                if emitted % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # fairness when nothing had to wait
                yield tick
            first_pass = False
            if not self.loop:
                return
            if first_ts is None:
                log.warning("replay.no_valid_lines", path=str(self.path))
                return  # looping over nothing would spin
            span = max(last_ts - first_ts, 0)
            offset += span + (span // (good - 1) if good > 1 and span else 1000)
