"""Showing a run: a live status line while it goes, then a table; or one JSON object."""

from __future__ import annotations

import json

from rich.console import Console
from rich.status import Status as LiveStatus
from rich.table import Table

from coinlink.verify.runner import Result, Step

STYLES = {"pass": "green", "fail": "bold red", "skip": "yellow"}


def as_json(results: list[Result]) -> str:
    ok = all(result.status != "fail" for result in results)
    return json.dumps({"ok": ok, "checks": [result.as_dict() for result in results]}, indent=2)


class Display:
    """The progress on stderr (a spinner on a terminal, one line per check otherwise) and
    the table on stdout."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._out = Console()
        self._err = Console(stderr=True)
        self._status: LiveStatus | None = None

    def __enter__(self) -> Display:
        self._status = self._err.status(f"verifying {self._url}")
        self._status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()

    def started(self, step: Step) -> None:
        if self._status is not None:
            self._status.update(f"verifying {self._url}: {step.name}")

    def done(self, result: Result) -> None:
        style = STYLES[result.status]
        self._err.print(f"[{style}]{result.status}[/] {result.name}", highlight=False)

    def table(self, results: list[Result]) -> None:
        table = Table(title=f"coinlink verify {self._url}")
        table.add_column("check")
        table.add_column("status")
        table.add_column("detail", overflow="fold")
        table.add_column("ms", justify="right")
        for result in results:
            style = STYLES[result.status]
            table.add_row(
                result.name, f"[{style}]{result.status}[/]", result.detail, str(result.duration_ms)
            )
        self._out.print(table)


def quiet(_: object) -> None:
    """No progress (JSON output)."""
