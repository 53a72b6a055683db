"""Users from the command line (the HTTP flows are in :mod:`coinlink.accounts.service`)."""

from __future__ import annotations

from uuid import UUID

from tortoise import Tortoise
from tortoise.exceptions import IntegrityError

from coinlink.accounts.emails import normalise_email
from coinlink.accounts.passwords import hash_password, password_problem
from coinlink.db import pending_migrations, tortoise_config
from config import Settings
from models.accounts import User


class UserError(Exception):
    """A user could not be created; the message says why."""


def _email(email: str) -> str:
    try:
        return normalise_email(email)
    except ValueError as exc:
        raise UserError(f"invalid email: {exc}") from None


async def create_user(
    email: str, password: str, display_name: str, *, is_admin: bool, rounds: int
) -> User:
    email = _email(email)
    problem = password_problem(password)
    if problem:
        raise UserError(f"invalid password: {problem}")
    password_hash = await hash_password(password, rounds)
    try:
        return await User.create(
            email=email, password_hash=password_hash, display_name=display_name, is_admin=is_admin
        )
    except IntegrityError:
        raise UserError(f"{email} is already registered") from None


async def list_users_cli(settings: Settings) -> list[User]:
    """Every user, oldest first (the operator's view; there is no HTTP equivalent)."""
    url = settings.effective_database_url
    if await pending_migrations(url):
        raise UserError("migrations are pending; run `coinlink migrate` first")
    await Tortoise.init(config=tortoise_config(url))
    try:
        return await User.all().order_by("created_at")
    finally:
        await Tortoise.close_connections()


async def create_user_cli(
    settings: Settings, email: str, password: str, display_name: str, is_admin: bool
) -> tuple[UUID, str]:
    """Create a user from the command line; returns its id and normalised email."""
    url = settings.effective_database_url
    if await pending_migrations(url):
        raise UserError("migrations are pending; run `coinlink migrate` first")
    await Tortoise.init(config=tortoise_config(url))
    try:
        user = await create_user(
            email, password, display_name, is_admin=is_admin, rounds=settings.bcrypt_rounds
        )
    finally:
        await Tortoise.close_connections()
    return user.id, user.email
