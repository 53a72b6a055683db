"""Password rules and bcrypt hashing, off the event loop and bounded.

bcrypt only reads 72 bytes and bcrypt 5 raises for longer input, so the limit is on UTF-8
bytes, not characters. Hashing holds a core for ~0.25 s at cost 12: it runs in an executor.
A burst of sign-ins would queue there unbounded (40 at once waited 22 s median on two
cores): :class:`HashingSlots` lets a worker hash a few at a time and refuses a caller that
cannot get a slot soon (:class:`HashingBusy`, a 503 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
from types import TracebackType

import bcrypt
from prometheus_client import Counter

HASHING_BUSY = Counter(
    "auth_hashing_busy_total",
    "Sign-ins, registrations and password changes refused: every hashing slot stayed busy.",
)

MIN_PASSWORD_BYTES = 8
MAX_PASSWORD_BYTES = 72


def password_problem(password: str) -> str | None:
    """Why ``password`` is unacceptable, or ``None``."""
    size = len(password.encode())
    if size < MIN_PASSWORD_BYTES:
        return f"must be at least {MIN_PASSWORD_BYTES} bytes of UTF-8"
    if size > MAX_PASSWORD_BYTES:
        return f"must be at most {MAX_PASSWORD_BYTES} bytes of UTF-8"
    return None


async def hash_password(password: str, rounds: int) -> str:
    salt = bcrypt.gensalt(rounds)
    hashed = await asyncio.get_running_loop().run_in_executor(
        None, bcrypt.hashpw, password.encode(), salt
    )
    return hashed.decode()


async def verify_password(password: str, hashed: str) -> bool:
    return await asyncio.get_running_loop().run_in_executor(
        None, bcrypt.checkpw, password.encode(), hashed.encode()
    )


class HashingBusy(Exception):
    """No hashing slot came free within the wait: retry in a moment."""

    def __init__(self) -> None:
        super().__init__("too many sign-ins at once; retry in a second")


class HashingSlots:
    """``async with slots:`` around a hash or a check: at most ``concurrency`` at once in
    this worker; a caller waits at most ``wait_s`` for a slot, else :class:`HashingBusy`."""

    def __init__(self, concurrency: int, wait_s: float) -> None:
        self._free = asyncio.Semaphore(concurrency)
        self.wait_s = wait_s

    async def __aenter__(self) -> None:
        try:
            async with asyncio.timeout(self.wait_s):
                await self._free.acquire()
        except TimeoutError:
            HASHING_BUSY.inc()
            raise HashingBusy() from None

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._free.release()
