"""ReplayProvider: CSV and JSON lines, timing by ``speed``, malformed lines, the shipped sample."""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from coinlink.market.providers.replay import SAMPLE_PATH, ReplayProvider
from coinlink.market.types import Tick

pytestmark = pytest.mark.timeout(60)


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def play(provider: ReplayProvider, limit: int | None = None) -> list[tuple[float, Tick]]:
    """Every tick with its arrival time (seconds since the start); stop after ``limit``."""
    out: list[tuple[float, Tick]] = []
    started = time.monotonic()
    async with contextlib.aclosing(provider.ticks()) as stream:
        async for tick in stream:
            out.append((time.monotonic() - started, tick))
            if limit is not None and len(out) >= limit:
                break
    return out


async def test_csv_with_optional_and_quoted_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ticks.csv",
        [
            "ts,symbol,price,volume,bid,ask",
            "1717200000000,BTC-USD,67000.50,0.015,67000.10,67000.90",
            "1717200000100,eth-usd,3500.25,1.5,,",
            '1717200000200,SOL-USD,"150.01",12,150.00,150.02',
        ],
    )
    ticks = [t for _, t in await play(ReplayProvider(path, speed=0))]
    assert ticks == [
        Tick(
            "BTC-USD",
            Decimal("67000.50"),
            Decimal("0.015"),
            1717200000000,
            Decimal("67000.10"),
            Decimal("67000.90"),
            "replay",
        ),
        Tick("ETH-USD", Decimal("3500.25"), Decimal("1.5"), 1717200000100, None, None, "replay"),
        Tick(
            "SOL-USD",
            Decimal("150.01"),
            Decimal("12"),
            1717200000200,
            Decimal("150.00"),
            Decimal("150.02"),
            "replay",
        ),
    ]


async def test_csv_columns_in_any_order(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", ["symbol,volume,price,ts", "BTC-USD,2,67000,1000"])
    ticks = [t for _, t in await play(ReplayProvider(path, speed=0))]
    assert ticks == [Tick("BTC-USD", Decimal(67000), Decimal(2), 1000, None, None, "replay")]


async def test_jsonl_with_numbers_strings_and_iso_times(tmp_path: Path) -> None:
    lines = [
        {"ts": 1717200000000, "symbol": "BTC-USD", "price": 67000.1, "volume": "0.5"},
        {
            "ts": "2024-06-01T00:00:00.250Z",
            "symbol": "ETH-USD",
            "price": "3500",
            "volume": 2,
            "bid": "3499.9",
            "ask": 3500.1,
        },
    ]
    path = write(tmp_path / "ticks.jsonl", [json.dumps(line) for line in lines])
    ticks = [t for _, t in await play(ReplayProvider(path, speed=0))]
    assert ticks[0] == Tick(
        "BTC-USD", Decimal("67000.1"), Decimal("0.5"), 1717200000000, None, None, "replay"
    )
    assert ticks[1].ts == 1717200000250
    assert (ticks[1].bid, ticks[1].ask) == (Decimal("3499.9"), Decimal("3500.1"))


async def test_json_lines_are_recognised_without_a_suffix(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ticks.log", ['{"ts": 1, "symbol": "BTC-USD", "price": "1", "volume": "0"}']
    )
    assert len(await play(ReplayProvider(path, speed=0))) == 1


async def test_malformed_csv_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ticks.csv",
        [
            "ts,symbol,price,volume,bid,ask",
            "1000,BTC-USD,67000,1,,",
            "1100,BTC-USD,67000,1",  # too few fields
            "1200,BTC-USD,67000,1,,,extra",  # too many
            "1300,BTC-USD,abc,1,,",  # not a number
            "1400,BTC-USD,NaN,1,,",  # not finite
            "1500,BTC-USD,67000,Infinity,,",
            "1600,BTC-USD,67000,-1,,",  # negative volume
            "1700,BTC-USD,0,1,,",  # zero price
            "1800,BTCUSD,67000,1,,",  # not BASE-QUOTE
            "yesterday,BTC-USD,67000,1,,",
            ",BTC-USD,67000,1,,",
            "1900,BTC-USD,67000,1,sNaN,",
            "",  # blank lines are not malformed
            "2000,BTC-USD,67001,1,,",
        ],
    )
    provider = ReplayProvider(path, speed=0)
    ticks = [t for _, t in await play(provider)]
    assert [t.ts for t in ticks] == [1000, 2000]
    assert provider.stats["malformed"] == 11


async def test_malformed_json_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    good = {"ts": 1, "symbol": "BTC-USD", "price": "1", "volume": "1"}
    path = write(
        tmp_path / "ticks.jsonl",
        [
            json.dumps(good),
            "{not json",
            "[1, 2, 3]",
            json.dumps({**good, "price": None}),
            json.dumps({**good, "price": True}),
            json.dumps({**good, "price": "NaN"}),
            json.dumps({**good, "volume": [1]}),
            json.dumps({"ts": 2, "symbol": "BTC-USD", "volume": "1"}),  # no price
            json.dumps({**good, "ts": -5}),
            json.dumps({**good, "ts": 3}),
        ],
    )
    provider = ReplayProvider(path, speed=0)
    assert [t.ts for _, t in await play(provider)] == [1, 3]
    assert provider.stats["malformed"] == 8


async def test_bytes_that_are_not_text_cost_only_their_line(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    path.write_bytes(
        b"ts,symbol,price,volume\n1,BTC-USD,1,1\n"
        b"\xff\xfe,BTC-USD,1,1\n"  # invalid UTF-8
        b"2,BTC-USD," + b"9" * 200_000 + b",1\n"  # over the csv module's field limit
        b"\xc2\xb2,BTC-USD,1,1\n"  # a superscript two: a digit to isdigit(), not to int()
        b"3,BTC-USD,1\x00,1\n"
        b"4,BTC-USD,2,1\n"
    )
    provider = ReplayProvider(path, speed=0)
    assert [t.ts for _, t in await play(provider)] == [1, 4]
    assert provider.stats["malformed"] == 4


async def test_speed_scales_the_gaps_between_timestamps(tmp_path: Path) -> None:
    # Gaps of 200 ms and 400 ms at speed 2 arrive 0.1 s and 0.2 s apart.
    path = write(
        tmp_path / "ticks.csv",
        ["ts,symbol,price,volume", "0,BTC-USD,1,1", "200,BTC-USD,2,1", "600,BTC-USD,3,1"],
    )
    arrivals = [at for at, _ in await play(ReplayProvider(path, speed=2.0))]
    assert arrivals[1] - arrivals[0] >= 0.09
    assert arrivals[2] - arrivals[0] >= 0.29
    assert arrivals[2] - arrivals[0] < 1.0  # not real time (0.6 s x several)


async def test_speed_zero_is_as_fast_as_possible(tmp_path: Path) -> None:
    # 2000 ticks a minute apart: 33 hours of market time.
    lines = ["ts,symbol,price,volume"] + [
        f"{i * 60_000},BTC-USD,{67000 + i},1" for i in range(2000)
    ]
    path = write(tmp_path / "ticks.csv", lines)
    started = time.monotonic()
    ticks = await play(ReplayProvider(path, speed=0))
    assert len(ticks) == 2000
    # Paced, the first gap alone would take a minute; the margin is for a loaded machine.
    assert time.monotonic() - started < 10


async def test_loop_replays_with_increasing_timestamps(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ticks.csv",
        [
            "ts,symbol,price,volume",
            "1000,BTC-USD,1,1",
            "oops",
            "2000,BTC-USD,2,1",
            "3000,ETH-USD,3,1",
        ],
    )
    provider = ReplayProvider(path, speed=0, loop=True)
    ticks = [t for _, t in await play(provider, limit=9)]
    assert [t.ts for t in ticks] == [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000]
    assert [t.price for t in ticks[3:6]] == [t.price for t in ticks[:3]]
    assert provider.stats["malformed"] == 1  # counted on the first pass only


async def test_symbols_filter(tmp_path: Path) -> None:
    provider = ReplayProvider(SAMPLE_PATH, speed=0, symbols=["eth-usd"])
    ticks = [t for _, t in await play(provider)]
    assert ticks and {t.symbol for t in ticks} == {"ETH-USD"}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: ReplayProvider(p / "missing.csv"), "no replay file"),
        (
            lambda p: ReplayProvider(write(p / "h.csv", ["ts,symbol,price", "1,BTC-USD,1"])),
            "volume",
        ),
        (lambda p: ReplayProvider(SAMPLE_PATH, speed=-1), "speed"),
    ],
)
def test_configuration_errors_are_raised_at_construction(
    tmp_path: Path, make: Callable[[Path], ReplayProvider], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make(tmp_path)


async def test_the_shipped_sample_parses_cleanly() -> None:
    provider = ReplayProvider(SAMPLE_PATH, speed=0)
    ticks = [t for _, t in await play(provider)]
    assert provider.stats["malformed"] == 0
    assert len(ticks) >= 300
    assert {t.symbol for t in ticks} == {"BTC-USD", "ETH-USD", "SOL-USD"}
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(ticks))
    assert all(t.bid is not None and t.ask is not None and t.bid < t.price < t.ask for t in ticks)
