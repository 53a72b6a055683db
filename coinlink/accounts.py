"""Accounts: registration, login, refresh-token rotation, sessions, revocation.

A session is one sign-in and one refresh-token family. Refreshing spends the presented
token with a conditional UPDATE (``spent_at IS NULL``), so of two concurrent refreshes with
one token exactly one wins; presenting a spent token is reuse (RFC 9700 §4.14): the whole
session is revoked, a security event is logged and counted.

Revoking a session (logout, password change, deletion, reuse) marks it revoked in the
database and in the bus (``revoked-session:<sid>``, for as long as an access token lives), so
every worker of every instance refuses its access tokens at once; logout also denies the
presented access token's ``jti`` until it expires.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import structlog
from prometheus_client import Counter
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from coinlink.bus import Bus
from coinlink.passwords import hash_password, verify_password
from coinlink.tokens import AccessClaims, TokenService, hash_refresh_token, new_refresh_token
from config import Settings
from models.accounts import RefreshToken, Session, User

security_log = structlog.get_logger(logger_name="coinlink.security")

TOKEN_REUSE = Counter(
    "auth_refresh_token_reuse_total", "Spent refresh tokens presented again (families revoked)."
)
LOGIN_FAILURES = Counter("auth_login_failures_total", "Failed logins.")
# How long a worker trusts its last database answer about a session; the bus marks
# revocations at once, this only bounds the damage if the bus lost them.
SESSION_CACHE_S = 5.0


class AccountError(Exception):
    """An expected refusal: ``code`` is the contract's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def user_dict(user: User) -> dict[str, Any]:
    """The contract's ``user``: never the password hash."""
    return {
        "id": str(user.id),
        "email": user.email,
        "display_name": user.display_name,
        "is_admin": user.is_admin,
        "created_at": iso(user.created_at),
    }


def _now() -> datetime:
    return datetime.now(UTC)


class AccountService:
    def __init__(self, settings: Settings, tokens: TokenService, bus: Bus) -> None:
        self.settings = settings
        self.tokens = tokens
        self.bus = bus
        self._dummy_hash: str | None = None
        # Per worker: session id -> (still valid, checked at). Bounds the database checks.
        self._session_cache: dict[str, tuple[bool, float]] = {}

    # -- passwords -------------------------------------------------------------------

    async def warm_up(self) -> None:
        """Make the hash an unknown email is checked against (once per worker, at start)."""
        self._dummy_hash = await hash_password("not-a-real-password", self._rounds)

    async def _verify_or_spend(self, password: str, user: User | None) -> bool:
        """Check the password; for an unknown user spend the same bcrypt work anyway."""
        if user is None:
            if self._dummy_hash is None:
                await self.warm_up()
            assert self._dummy_hash is not None
            await verify_password(password, self._dummy_hash)
            return False
        return await verify_password(password, user.password_hash)

    @property
    def _rounds(self) -> int:
        return self.settings.bcrypt_rounds

    # -- sign-up and sign-in ----------------------------------------------------------

    async def register(
        self, email: str, password: str, display_name: str, user_agent: str, ip: str
    ) -> tuple[User, Tokens]:
        password_hash = await hash_password(password, self._rounds)
        try:
            async with in_transaction():
                user = await User.create(
                    email=email, password_hash=password_hash, display_name=display_name
                )
                tokens = await self._open_session(user, user_agent, ip)
        except IntegrityError:
            raise AccountError("email_taken", "this email is already registered") from None
        return user, tokens

    async def login(
        self, email: str, password: str, user_agent: str, ip: str
    ) -> tuple[User, Tokens]:
        user = await User.get_or_none(email=email)
        if not await self._verify_or_spend(password, user) or user is None:
            LOGIN_FAILURES.inc()
            raise AccountError("invalid_credentials", "email or password is wrong")
        return user, await self._open_session(user, user_agent, ip)

    async def _open_session(self, user: User, user_agent: str, ip: str) -> Tokens:
        now = _now()
        session = await Session.create(
            user=user,
            last_used_at=now,
            expires_at=now + timedelta(seconds=self.settings.refresh_token_ttl_s),
            user_agent=user_agent[:256],
            ip=ip[:45],
        )
        return await self._issue(user.id, session)

    async def _issue(self, user_id: UUID, session: Session) -> Tokens:
        refresh, token_hash = new_refresh_token()
        await RefreshToken.create(
            token_hash=token_hash, session=session, expires_at=session.expires_at
        )
        access = self.tokens.issue_access(str(user_id), str(session.id))
        return Tokens(access.token, refresh, access.expires_in)

    # -- refresh rotation -------------------------------------------------------------

    async def refresh(self, refresh_token: str) -> Tokens:
        token_hash = hash_refresh_token(refresh_token)
        now = _now()
        spent = await RefreshToken.filter(
            token_hash=token_hash, spent_at__isnull=True, expires_at__gt=now
        ).update(spent_at=now)
        record = await RefreshToken.get_or_none(token_hash=token_hash).select_related("session")
        if record is None or record.session.revoked_at is not None:
            raise AccountError("invalid_token", "refresh token is not valid")
        session = record.session
        if not spent:
            if record.spent_at is not None:
                await self._revoke_family(session, reason="refresh_token_reuse")
                raise AccountError(
                    "token_reused", "refresh token was already used; the session is revoked"
                )
            raise AccountError("invalid_token", "refresh token has expired")
        session.last_used_at = now
        session.expires_at = now + timedelta(seconds=self.settings.refresh_token_ttl_s)
        await session.save(update_fields=["last_used_at", "expires_at"])
        return await self._issue(session.user_id, session)  # type: ignore[attr-defined]

    async def _revoke_family(self, session: Session, reason: str) -> None:
        TOKEN_REUSE.inc()
        security_log.warning(
            "refresh_token_reuse",
            session_id=str(session.id),
            user_id=str(session.user_id),  # type: ignore[attr-defined]
            action="session revoked",
            reason=reason,
        )
        await self.revoke_sessions([session.id])

    # -- revocation -------------------------------------------------------------------

    async def revoke_sessions(self, session_ids: list[UUID]) -> None:
        if not session_ids:
            return
        await Session.filter(id__in=session_ids, revoked_at__isnull=True).update(revoked_at=_now())
        await asyncio.gather(
            *(
                self.bus.set(f"revoked-session:{sid}", b"1", ttl_s=self.settings.access_token_ttl_s)
                for sid in session_ids
            )
        )
        for sid in session_ids:
            self._session_cache[str(sid)] = (False, time.monotonic())

    async def logout(self, claims: AccessClaims) -> None:
        ttl = max(1, claims.expires_at - int(time.time()))
        await self.bus.set(f"denied-jti:{claims.jti}", b"1", ttl_s=ttl)
        await self.revoke_sessions([UUID(claims.session_id)])

    async def access_allowed(self, claims: AccessClaims) -> bool:
        """False for a denied token or a revoked session (bus first, database briefly cached)."""
        denied, revoked = await self.bus.get_many(
            f"denied-jti:{claims.jti}", f"revoked-session:{claims.session_id}"
        )
        if denied is not None or revoked is not None:
            return False
        cached = self._session_cache.get(claims.session_id)
        if cached is not None and time.monotonic() - cached[1] < SESSION_CACHE_S:
            return cached[0]
        valid = await Session.filter(
            id=claims.session_id, revoked_at__isnull=True, expires_at__gt=_now()
        ).exists()
        if len(self._session_cache) > 10_000:
            self._session_cache.clear()
        self._session_cache[claims.session_id] = (valid, time.monotonic())
        return valid

    # -- sessions and passwords -------------------------------------------------------

    async def list_sessions(self, user_id: str) -> list[Session]:
        return (
            await Session.filter(user_id=user_id, revoked_at__isnull=True, expires_at__gt=_now())
            .order_by("-last_used_at")
            .all()
        )

    async def revoke_own_session(self, user_id: str, session_id: UUID) -> bool:
        session = await Session.get_or_none(id=session_id, user_id=user_id, revoked_at=None)
        if session is None:
            return False
        await self.revoke_sessions([session.id])
        return True

    async def change_password(
        self, user_id: str, current_session: str, current: str, new: str
    ) -> None:
        user = await User.get(id=user_id)
        if not await verify_password(current, user.password_hash):
            raise AccountError("invalid_credentials", "current password is wrong")
        user.password_hash = await hash_password(new, self._rounds)
        await user.save(update_fields=["password_hash", "updated_at"])
        others = await Session.filter(
            Q(user_id=user_id) & Q(revoked_at__isnull=True) & ~Q(id=current_session)
        ).values_list("id", flat=True)
        await self.revoke_sessions(list(others))  # type: ignore[arg-type]

    async def delete_account(self, user_id: str, password: str) -> None:
        user = await User.get(id=user_id)
        if not await verify_password(password, user.password_hash):
            raise AccountError("invalid_credentials", "password is wrong")
        sessions = await Session.filter(user_id=user_id, revoked_at__isnull=True).values_list(
            "id", flat=True
        )
        await self.revoke_sessions(list(sessions))  # type: ignore[arg-type]
        await user.delete()
