"""Access tokens (JWT) and refresh tokens (opaque).

Access tokens are signed with ONE configured algorithm (HS256 with the secret, or EdDSA /
RS256 with key files) and decoded with exactly that algorithm allowed, the issuer, the
audience and every claim required (RFC 8725). ``typ`` is checked by hand (PyJWT does not),
and a header carrying anything but ``alg`` and ``typ`` is refused: we never issue ``kid``
or ``jku``, so nothing in a header is ever looked up.

Refresh tokens are 256 random bits, shown to the client once; only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from config import Settings, ephemeral_secret

ACCESS_TYPE = "access"
REQUIRED_CLAIMS = ("sub", "jti", "iat", "exp", "iss", "aud", "typ", "sid")
_ALLOWED_HEADER_KEYS = frozenset({"alg", "typ"})
_VERIFIED_CACHE_SIZE = 4096


class InvalidToken(Exception):
    """The token is not one of ours, expired, or otherwise unusable (the message says why)."""


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: str
    session_id: str
    jti: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class IssuedAccess:
    token: str
    jti: str
    expires_in: int


class TokenService:
    def __init__(self, settings: Settings) -> None:
        self.algorithm = settings.jwt.algorithm
        self.issuer = settings.jwt.issuer
        self.audience = settings.jwt.audience
        self.ttl_s = settings.access_token_ttl_s
        self._signing_key: Any
        self._verifying_key: Any
        self._verified: OrderedDict[str, AccessClaims] = OrderedDict()  # first seen first
        if self.algorithm == "HS256":
            secret = settings.jwt.secret
            # Tests and direct create_app() calls without a secret get one of this service's
            # own (`coinlink serve` exports one for all its workers first).
            key = secret.get_secret_value() if secret else ephemeral_secret()
            self._signing_key = self._verifying_key = key
        else:
            assert settings.jwt.private_key_file and settings.jwt.public_key_file
            self._signing_key = settings.jwt.private_key_file.read_text()
            self._verifying_key = settings.jwt.public_key_file.read_text()

    def issue_access(self, user_id: str, session_id: str) -> IssuedAccess:
        now = int(time.time())
        jti = uuid.uuid4().hex
        claims = {
            "sub": user_id,
            "sid": session_id,
            "jti": jti,
            "iat": now,
            "exp": now + self.ttl_s,
            "iss": self.issuer,
            "aud": self.audience,
            "typ": ACCESS_TYPE,
        }
        token = jwt.encode(claims, self._signing_key, algorithm=self.algorithm)
        return IssuedAccess(token=token, jti=jti, expires_in=self.ttl_s)

    def decode_access(self, token: str) -> AccessClaims:
        """Verified claims of ``token``; raises :class:`InvalidToken`.

        A client sends the same token on every request for its lifetime, so verified
        tokens are remembered per worker (bounded) and only their expiry is re-checked.
        """
        claims = self._verified.get(token)
        now = time.time()
        if claims is None:
            claims = self._verify(token)
            self._forget_oldest(now)
            self._verified[token] = claims
        if claims.expires_at <= now:
            raise InvalidToken("token expired")
        return claims

    def _forget_oldest(self, now: float) -> None:
        """Room for one more: drop the oldest while full or expired.

        First seen first out is about oldest issued first, so expired tokens leave from the
        front: the cache holds the tokens of about one lifetime, not 4,096 long after
        their expiry (~0.8 KiB each per worker: a soak with logins saw it fill for hours).
        """
        verified = self._verified
        while verified:
            token, claims = next(iter(verified.items()))
            if len(verified) < _VERIFIED_CACHE_SIZE and claims.expires_at > now:
                return
            del verified[token]

    def _verify(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
            if not _ALLOWED_HEADER_KEYS.issuperset(header):
                raise InvalidToken("unexpected token header")
            claims = jwt.decode(
                token,
                self._verifying_key,
                algorithms=[self.algorithm],
                issuer=self.issuer,
                audience=self.audience,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise InvalidToken(type(exc).__name__) from None
        if claims.get("typ") != ACCESS_TYPE:
            raise InvalidToken("not an access token")
        values = (claims["sub"], claims["sid"], claims["jti"])
        if not all(isinstance(v, str) and 0 < len(v) <= 64 for v in values):
            raise InvalidToken("malformed claims")
        return AccessClaims(
            user_id=claims["sub"],
            session_id=claims["sid"],
            jti=claims["jti"],
            expires_at=int(claims["exp"]),
        )


def new_refresh_token() -> tuple[str, str]:
    """A fresh refresh token and the hash that is stored in its place."""
    token = secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
