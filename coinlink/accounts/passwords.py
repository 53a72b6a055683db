"""Password rules and bcrypt hashing, off the event loop.

bcrypt only reads 72 bytes and bcrypt 5 raises for longer input, so the limit is on UTF-8
bytes, not characters. Hashing holds a core for ~0.25 s at cost 12: it runs in an executor.
"""

from __future__ import annotations

import asyncio

import bcrypt

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
