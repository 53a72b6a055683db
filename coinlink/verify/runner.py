"""Running the checks in order, each under a deadline, and what each one found.

A check is a coroutine that returns a one-line detail when it passes and raises
:class:`Failed` or :class:`Skipped` otherwise. Every check has its own deadline and all of
them share one budget, so a deployment that hangs fails the run within a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from websockets.exceptions import WebSocketException

from coinlink import __version__

Status = Literal["pass", "fail", "skip"]
TOTAL_BUDGET_S = 55.0
REQUEST_TIMEOUT_S = 5.0


class Failed(Exception):
    """The check found the deployment wrong; the message says how."""


class Skipped(Exception):
    """The check could not apply here; the message says why."""


@dataclass(frozen=True)
class Target:
    url: str
    admin_token: str | None = None
    metrics_token: str | None = None


@dataclass
class Account:
    """The throwaway user the auth round trip registers (and the run deletes at the end)."""

    email: str
    password: str = field(default_factory=lambda: secrets.token_urlsafe(24))


@dataclass
class Deployment:
    """What the checks share: the target, one HTTP client and what earlier checks learned."""

    target: Target
    http: httpx.AsyncClient
    account: Account | None = None
    _symbol: str | None = None

    async def symbol(self) -> str:
        """A configured symbol, preferring one that already has a price."""
        if self._symbol is None:
            items = expect(await self.http.get("/api/v2/market/tickers"), 200).json()["items"]
            if not items:
                raise Failed("GET /api/v2/market/tickers lists no symbol")
            priced = [item for item in items if item.get("price") is not None]
            self._symbol = str((priced or items)[0]["symbol"])
        return self._symbol

    async def sign_in(self) -> dict[str, str]:
        """Bearer headers of a new session of the throwaway user."""
        if self.account is None:
            raise Skipped("no throwaway user: auth-round-trip did not register one")
        body = {"email": self.account.email, "password": self.account.password}
        response = expect(await self.http.post("/api/v2/auth/login", json=body), 200)
        tokens = response.json()["tokens"]
        return bearer(tokens["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def describe(response: httpx.Response) -> str:
    """``METHOD path -> status code: message`` of an unexpected answer."""
    request = response.request
    said = ""
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        error = response.json()["error"]
        said = f" {error['code']}: {error['message']}"
    return f"{request.method} {request.url.path} -> {response.status_code}{said}"


def expect(response: httpx.Response, status: int) -> httpx.Response:
    """``response`` if it has ``status``; anything else fails the check."""
    if response.status_code != status:
        raise Failed(describe(response))
    return response


@dataclass(frozen=True)
class Result:
    name: str
    status: Status
    detail: str
    duration_ms: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "duration_ms": self.duration_ms,
        }


Check = Callable[[Deployment], Awaitable[str]]


@dataclass(frozen=True)
class Step:
    name: str
    check: Check
    deadline_s: float


async def run(
    target: Target,
    steps: list[Step],
    started: Callable[[Step], None],
    done: Callable[[Result], None],
) -> list[Result]:
    """Each step in order; once ``health`` fails the rest are skipped (nothing answers)."""
    results: list[Result] = []
    budget_end = time.monotonic() + TOTAL_BUDGET_S
    headers = {"user-agent": f"coinlink-verify/{__version__}"}
    async with httpx.AsyncClient(
        base_url=target.url.rstrip("/"), timeout=REQUEST_TIMEOUT_S, headers=headers
    ) as http:
        deployment = Deployment(target, http)
        try:
            for step in steps:
                started(step)
                if results and results[0].name == "health" and results[0].status == "fail":
                    result = Result(step.name, "skip", "the deployment failed health", 0)
                else:
                    result = await _run_step(deployment, step, budget_end - time.monotonic())
                results.append(result)
                done(result)
        finally:
            await _delete_account(deployment)
    return results


async def _run_step(deployment: Deployment, step: Step, remaining_s: float) -> Result:
    deadline = min(step.deadline_s, remaining_s)
    start = time.perf_counter()
    status: Status = "fail"
    try:
        if deadline <= 0:
            raise Failed("the run's time budget is spent")
        async with asyncio.timeout(deadline):
            detail = await step.check(deployment)
        status = "pass"
    except Skipped as exc:
        status, detail = "skip", str(exc)
    except Failed as exc:
        detail = str(exc)
    except TimeoutError:
        detail = f"not done within {deadline:.0f} s"
    except (httpx.HTTPError, OSError, WebSocketException) as exc:
        detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
    except (ValueError, KeyError, TypeError) as exc:  # an answer of another shape
        detail = f"unexpected answer: {type(exc).__name__}: {exc}"
    return Result(step.name, status, detail, round((time.perf_counter() - start) * 1000))


async def _delete_account(deployment: Deployment) -> None:
    """The throwaway user goes with everything it owns; a failure is said, not fatal."""
    account = deployment.account
    if account is None:
        return
    try:
        async with asyncio.timeout(10):
            headers = await deployment.sign_in()
            response = await deployment.http.request(
                "DELETE",
                "/api/v2/users/me",
                headers=headers,
                json={"password": account.password},
            )
            expect(response, 204)
    except (Failed, Skipped, TimeoutError, httpx.HTTPError, ValueError, KeyError) as exc:
        print(f"warning: the throwaway user {account.email} is left: {exc}", file=sys.stderr)
