"""Accounts: registration, login, refresh-token rotation, sessions, revocation.

A session is one sign-in and one refresh-token family. Refreshing spends the presented
token with a conditional UPDATE (``spent_at IS NULL``), so of two concurrent refreshes with
one token exactly one wins. Presenting the spent token again within
``COINLINK_REFRESH_REUSE_GRACE_S`` (two browser tabs) gets the winner's answer again
(:mod:`coinlink.accounts.successors`); after it, that is reuse (RFC 9700 §4.14): the whole
session is revoked, a security event is logged and counted.

Revoking a session (logout, password change, deletion, reuse) marks it revoked in the
database and in the bus (``revoked-session:<sid>``, for as long as an access token lives), so
every worker of every instance refuses its access tokens at once; logout also denies the
presented access token's ``jti`` until it expires.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
import structlog
from prometheus_client import Counter
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from coinlink import channels
from coinlink.accounts.passwords import HashingSlots, hash_password, verify_password
from coinlink.accounts.successors import seal, unseal
from coinlink.accounts.tokens import (
    AccessClaims,
    TokenService,
    hash_refresh_token,
    new_refresh_token,
)
from coinlink.accounts.user_views import UserViews, user_changed
from coinlink.bus import Bus, BusError
from coinlink.wire import iso_time
from config import Settings
from models.accounts import RefreshToken, Session, User

security_log = structlog.get_logger(logger_name="coinlink.security")
log = structlog.get_logger(logger_name="coinlink.accounts.service")

TOKEN_REUSE = Counter(
    "auth_refresh_token_reuse_total", "Spent refresh tokens presented again (families revoked)."
)
LOGIN_FAILURES = Counter("auth_login_failures_total", "Failed logins.")
# How long a worker trusts its last database answer about a session; the bus marks
# revocations at once, this only bounds the damage if the bus lost them.
SESSION_CACHE_S = 5.0
# The bus answers in well under a millisecond; past this it is treated as down.
BUS_DEADLINE_S = 0.25
# A refresh's answer, sealed, under the spent token's hash (coinlink.accounts.successors).
SUCCESSOR_KEY = "refresh-successor:"
SUCCESSOR_WAIT_S = 0.5
SUCCESSOR_POLL_S = 0.02
BUS_FALLBACKS = Counter(
    "auth_revocation_bus_fallbacks_total",
    "Access checks answered from the database because the bus did not answer.",
)


class AuthError(Exception):
    """A token (``invalid_token``, ``token_reused``) or a password
    (``invalid_credentials``) was not accepted; ``code`` says which."""

    def __init__(self, message: str, code: str = "invalid_token") -> None:
        super().__init__(message)
        self.code = code


class EmailTaken(Exception):
    def __init__(self) -> None:
        super().__init__("this email is already registered")


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


def user_dict(user: User) -> dict[str, Any]:
    """The contract's ``user``: never the password hash."""
    return {
        "id": str(user.id),
        "email": user.email,
        "display_name": user.display_name,
        "is_admin": user.is_admin,
        "created_at": iso_time(user.created_at),
    }


USER_AGENT_CHARS = 256  # the column's size
# What a header may carry that the database refuses (NUL) or cannot encode (the lone
# surrogates undecodable bytes become), and other control characters.
_UNSTORABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def _storable(text: str, limit: int) -> str:
    """Header text fit to store and show: each unstorable character becomes U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", text[:limit])


def _now() -> datetime:
    return datetime.now(UTC)


class AccountService:
    def __init__(self, settings: Settings, tokens: TokenService, bus: Bus) -> None:
        self.settings = settings
        self.tokens = tokens
        self.bus = bus
        self._dummy_hash: str | None = None
        self._hashing = HashingSlots(settings.bcrypt_concurrency, settings.bcrypt_wait_s)
        # Per worker: session id -> (still valid, checked at), oldest check first. Bounds the
        # database checks; entries leave once older than SESSION_CACHE_S (see _remember).
        self._session_cache: OrderedDict[str, tuple[bool, float]] = OrderedDict()
        self.views = UserViews()

    # -- passwords -------------------------------------------------------------------

    async def warm_up(self) -> None:
        """Make the hash an unknown email is checked against (once per worker, at start)."""
        self._dummy_hash = await self._hash("not-a-real-password")

    async def _hash(self, password: str) -> str:
        async with self._hashing:
            return await hash_password(password, self.settings.bcrypt_rounds)

    async def _verify(self, password: str, hashed: str) -> bool:
        async with self._hashing:
            return await verify_password(password, hashed)

    async def _verify_or_spend(self, password: str, user: User | None) -> bool:
        """Check the password; for an unknown user spend the same bcrypt work anyway."""
        if user is None:
            if self._dummy_hash is None:
                await self.warm_up()
            assert self._dummy_hash is not None
            await self._verify(password, self._dummy_hash)
            return False
        return await self._verify(password, user.password_hash)

    # -- sign-up and sign-in ----------------------------------------------------------

    async def register(
        self, email: str, password: str, display_name: str, user_agent: str, ip: str
    ) -> tuple[User, Tokens]:
        password_hash = await self._hash(password)
        try:
            async with in_transaction():
                user = await User.create(
                    email=email, password_hash=password_hash, display_name=display_name
                )
                tokens = await self._open_session(user, user_agent, ip)
        except IntegrityError:
            raise EmailTaken from None
        return user, tokens

    async def login(
        self, email: str, password: str, user_agent: str, ip: str
    ) -> tuple[User, Tokens]:
        user = await User.get_or_none(email=email)
        if not await self._verify_or_spend(password, user) or user is None:
            LOGIN_FAILURES.inc()
            raise AuthError("email or password is wrong", "invalid_credentials")
        return user, await self._open_session(user, user_agent, ip)

    async def _open_session(self, user: User, user_agent: str, ip: str) -> Tokens:
        now = _now()
        session = await Session.create(
            user=user,
            last_used_at=now,
            expires_at=now + timedelta(seconds=self.settings.refresh_token_ttl_s),
            user_agent=_storable(user_agent, USER_AGENT_CHARS),
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
        tokens: Tokens | None = None
        # Spend and replace in one transaction: a failure half-way must not leave the
        # client holding a spent token with no successor (its retry would look like reuse).
        async with in_transaction():
            spent = await RefreshToken.filter(
                token_hash=token_hash, spent_at__isnull=True, expires_at__gt=now
            ).update(spent_at=now)
            if spent:
                record = await RefreshToken.get(token_hash=token_hash).select_related("session")
                session = record.session
                if session.revoked_at is not None:
                    raise AuthError("refresh token is not valid")
                session.last_used_at = now
                session.expires_at = now + timedelta(seconds=self.settings.refresh_token_ttl_s)
                await session.save(update_fields=["last_used_at", "expires_at"])
                tokens = await self._issue(session.user_id, session)  # type: ignore[attr-defined]
        if tokens is not None:
            await self._keep_successor(refresh_token, token_hash, tokens)
            return tokens
        stale = await RefreshToken.get_or_none(token_hash=token_hash).select_related("session")
        if stale is None or stale.session.revoked_at is not None:
            raise AuthError("refresh token is not valid")
        if stale.spent_at is None:
            raise AuthError("refresh token has expired")
        grace_s = self.settings.refresh_reuse_grace_s
        if grace_s and (now - stale.spent_at).total_seconds() < grace_s:
            # A second tab, not a thief (the thief would have to be as quick as the tab):
            # the same answer again, or no revocation when it is not to be had.
            again = await self._successor(refresh_token, token_hash)
            if again is not None:
                return again
            raise AuthError(
                f"refresh token was used {grace_s:g} s ago or less; use the tokens that "
                "refresh returned"
            )
        await self._on_reuse(stale.session)
        raise AuthError("refresh token was already used; the session is revoked", "token_reused")

    async def _keep_successor(self, spent_token: str, token_hash: str, tokens: Tokens) -> None:
        grace_s = self.settings.refresh_reuse_grace_s
        if not grace_s:
            return
        answer = orjson.dumps(tokens.as_dict())
        try:
            async with asyncio.timeout(BUS_DEADLINE_S):
                await self.bus.set(
                    f"{SUCCESSOR_KEY}{token_hash}", seal(spent_token, answer), ttl_s=grace_s
                )
        except (BusError, TimeoutError) as exc:
            log.warning("refresh_successor_not_kept", error=str(exc) or "timeout")

    async def _successor(self, spent_token: str, token_hash: str) -> Tokens | None:
        """The answer the first refresh with this token gave, while it is kept. Waits a
        moment for it: the two tabs' requests may be a few milliseconds apart, and the
        first one keeps its answer only after its transaction has committed."""
        deadline = time.monotonic() + SUCCESSOR_WAIT_S
        while True:
            try:
                async with asyncio.timeout(BUS_DEADLINE_S):
                    [sealed] = await self.bus.get_many(f"{SUCCESSOR_KEY}{token_hash}")
            except (BusError, TimeoutError):
                return None
            answer = unseal(spent_token, sealed) if sealed is not None else None
            if answer is not None:
                kept = orjson.loads(answer)
                return Tokens(kept["access_token"], kept["refresh_token"], kept["expires_in"])
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(SUCCESSOR_POLL_S)

    async def _on_reuse(self, session: Session) -> None:
        TOKEN_REUSE.inc()
        security_log.warning(
            "refresh_token_reuse",
            session_id=str(session.id),
            user_id=str(session.user_id),  # type: ignore[attr-defined]
            action="session revoked",
        )
        await self.revoke_sessions(str(session.user_id), [session.id])  # type: ignore[attr-defined]

    # -- revocation -------------------------------------------------------------------

    async def revoke_sessions(
        self, user_id: str, session_ids: list[UUID], denied_jti: str = ""
    ) -> None:
        """Revoke in the database (the record), then mark in the bus (the fast path).

        The bus marks are best effort: when Redis is down the revocation still holds,
        because every worker then checks sessions in the database.
        """
        if not session_ids:
            return
        await Session.filter(id__in=session_ids, revoked_at__isnull=True).update(revoked_at=_now())
        for sid in session_ids:
            self._remember(str(sid), False)
        ttl = self.settings.access_token_ttl_s
        group = channels.user_group(user_id)
        marks: list[Awaitable[object]] = [
            self.bus.set(channels.revoked_session_key(str(sid)), b"1", ttl_s=ttl, group=group)
            for sid in session_ids
        ]
        if denied_jti:
            key = channels.denied_jti_key(denied_jti)
            marks.append(self.bus.set(key, b"1", ttl_s=ttl, group=group))
        # Every worker's WebSocket hub closes these sessions' sockets (1008) at once.
        event = orjson.dumps({"sessions": [str(sid) for sid in session_ids]})
        marks.append(self.bus.publish(channels.REVOCATIONS, event))
        try:
            async with asyncio.timeout(BUS_DEADLINE_S * 4):
                await asyncio.gather(*marks)
        except (BusError, TimeoutError) as exc:
            log.warning("revocation_not_marked_in_bus", error=str(exc) or "timeout")

    async def logout(self, claims: AccessClaims) -> None:
        await self.revoke_sessions(claims.user_id, [UUID(claims.session_id)], denied_jti=claims.jti)

    async def access_allowed(self, claims: AccessClaims) -> bool:
        return (await self.check_access(claims))[0]

    async def check_access(self, claims: AccessClaims) -> tuple[bool, bytes | None]:
        """(False for a denied token or a revoked session, the user's version).

        The bus answers at once for every worker; the database is re-read at most every
        few seconds per session, and on every request while the bus does not answer. The
        same round trip reads the user's version (:mod:`coinlink.accounts.user_views`);
        None when the bus did not answer.
        """
        try:
            async with asyncio.timeout(BUS_DEADLINE_S):
                denied, revoked, version = await self.bus.get_many(
                    channels.denied_jti_key(claims.jti),
                    channels.revoked_session_key(claims.session_id),
                    channels.user_version_key(claims.user_id),
                    group=channels.user_group(claims.user_id),
                )
        except (BusError, TimeoutError):
            BUS_FALLBACKS.inc()
            return await self._session_valid(claims.session_id), None
        if denied is not None or revoked is not None:
            return False, None
        version = version or b"0"
        cached = self._session_cache.get(claims.session_id)
        if cached is not None and time.monotonic() - cached[1] < SESSION_CACHE_S:
            return cached[0], version
        return await self._session_valid(claims.session_id), version

    async def cached_for(
        self,
        user_id: str,
        what: Hashable,
        version: bytes | None,
        render: Callable[[], Awaitable[bytes | None]],
    ) -> bytes | None:
        """``render()``'s body (None: nothing to show), from this worker's
        :class:`UserViews` when it was filled under ``version`` (see :meth:`check_access`;
        None: the bus did not answer, so the database does and nothing is kept)."""
        key = (user_id, what)
        if version is not None:
            body = self.views.get(key, version)
            if body is not None:
                return body
        body = await render()
        if version is not None and body is not None:
            self.views.put(key, version, body)
        return body

    async def user_changed(self, user_id: str) -> None:
        await user_changed(self.bus, user_id)

    async def _session_valid(self, session_id: str) -> bool:
        valid = await Session.filter(
            id=session_id, revoked_at__isnull=True, expires_at__gt=_now()
        ).exists()
        self._remember(session_id, valid)
        return valid

    def _remember(self, session_id: str, valid: bool) -> None:
        """Cache a check; checks older than SESSION_CACHE_S leave, being of no more use.

        (A cache cleared only at 10,000 sessions grew with every login for hours in a soak.)
        """
        now = time.monotonic()
        cache = self._session_cache
        cache[session_id] = (valid, now)
        cache.move_to_end(session_id)
        while now - next(iter(cache.values()))[1] >= SESSION_CACHE_S:
            cache.popitem(last=False)

    # -- sessions and passwords -------------------------------------------------------

    async def list_sessions(self, user_id: str, limit: int) -> list[Session]:
        return (
            await Session.filter(user_id=user_id, revoked_at__isnull=True, expires_at__gt=_now())
            .order_by("-last_used_at")
            .limit(limit)
        )

    async def revoke_own_session(self, user_id: str, raw_id: str | UUID) -> bool:
        """Revoke the caller's live session ``raw_id``; False when there is none such (an
        id that is not a UUID names none: a 404 like any other, not "no such route")."""
        try:
            session_id = raw_id if isinstance(raw_id, UUID) else UUID(raw_id)
        except ValueError:
            return False
        if not await Session.filter(id=session_id, user_id=user_id, revoked_at=None).exists():
            return False
        await self.revoke_sessions(user_id, [session_id])
        return True

    async def change_password(
        self, user: User, current_session: str, current: str, new: str
    ) -> None:
        if not await self._verify(current, user.password_hash):
            raise AuthError("current password is wrong", "invalid_credentials")
        user.password_hash = await self._hash(new)
        await user.save(update_fields=["password_hash", "updated_at"])
        others = await Session.filter(
            Q(user_id=user.id) & Q(revoked_at__isnull=True) & ~Q(id=current_session)
        ).values_list("id", flat=True)
        await self.revoke_sessions(str(user.id), list(others))  # type: ignore[arg-type]

    async def delete_account(self, user: User, password: str) -> None:
        if not await self._verify(password, user.password_hash):
            raise AuthError("password is wrong", "invalid_credentials")
        sessions = await Session.filter(user_id=user.id, revoked_at__isnull=True).values_list(
            "id", flat=True
        )
        await self.revoke_sessions(str(user.id), list(sessions))  # type: ignore[arg-type]
        await user.delete()
