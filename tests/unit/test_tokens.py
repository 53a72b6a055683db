"""TokenService's own rules: what an access token carries, whom it names, how long it lives
(also once verified and remembered), which claims and headers it may have; refresh tokens.

Forgeries through the HTTP API (alg none, other keys and algorithms, wrong or missing
claims, kid headers, garbage) are tests/api/test_auth.py's; key-file algorithms are
tests/api/test_asymmetric_tokens.py's.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import jwt
import pytest

from coinlink.accounts.tokens import (
    _VERIFIED_CACHE_SIZE,
    InvalidToken,
    TokenService,
    hash_refresh_token,
    new_refresh_token,
)
from config import Settings, load_settings
from tests.support.accounts import claims, forge
from tests.support.apps import TEST_SECRET
from tests.support.services import wait_for


def settings(**overrides: Any) -> Settings:
    return load_settings(**{"env": "test", "jwt_secret": TEST_SECRET, **overrides})


def test_an_issued_token_names_its_user_and_session_and_lives_the_configured_time() -> None:
    service = TokenService(settings(access_token_ttl_s=600))
    issued = service.issue_access("user-1", "session-1")
    verified = service.decode_access(issued.token)
    assert (verified.user_id, verified.session_id, verified.jti) == (
        "user-1",
        "session-1",
        issued.jti,
    )
    assert issued.expires_in == 600
    assert 598 <= verified.expires_at - time.time() <= 600
    assert jwt.get_unverified_header(issued.token) == {"alg": "HS256", "typ": "JWT"}
    # Each token has its own id: logout denies exactly the one presented.
    assert service.issue_access("user-1", "session-1").jti != issued.jti


@pytest.mark.parametrize(
    "theirs",
    [{}, {"jwt_issuer": "coinlink-eu"}, {"jwt_audience": "coinlink-eu-api"}],
    ids=["default", "issuer", "audience"],
)
def test_a_token_is_accepted_only_where_issuer_and_audience_match(theirs: dict[str, str]) -> None:
    ours = TokenService(settings(jwt_issuer="coinlink-eu", jwt_audience="coinlink-eu-api"))
    other = TokenService(settings(**theirs))
    token = ours.issue_access("user-1", "session-1").token
    assert ours.decode_access(token).user_id == "user-1"
    with pytest.raises(InvalidToken):
        other.decode_access(token)


def test_a_token_from_a_service_with_another_secret_is_refused() -> None:
    token = TokenService(settings()).issue_access("user-1", "session-1").token
    other = TokenService(settings(jwt_secret="another-secret-of-the-same-sort-0123456789abc"))
    with pytest.raises(InvalidToken):
        other.decode_access(token)


def test_without_a_configured_secret_a_service_verifies_its_own_tokens() -> None:
    service = TokenService(settings(jwt_secret=None))
    assert service.decode_access(service.issue_access("u", "s").token).session_id == "s"


def test_a_remembered_token_is_refused_once_it_expires() -> None:
    service = TokenService(settings())
    token = forge(claims(sub="user-1", exp=int(time.time()) + 1))
    assert service.decode_access(token).user_id == "user-1"  # verified, and remembered

    def refused() -> bool:
        try:
            service.decode_access(token)
        except InvalidToken as exc:
            return str(exc) == "token expired"
        return False

    wait_for(refused, 5, "the remembered token's expiry")


def test_remembered_tokens_leave_once_expired_and_never_exceed_the_bound() -> None:
    # Every login and refresh brings a new token: a soak saw this cache fill for hours.
    service = TokenService(settings())
    short = forge(claims(exp=int(time.time()) + 1))
    service.decode_access(short)
    kept = forge(claims())
    service.decode_access(kept)

    def forgotten() -> bool:
        service.decode_access(forge(claims()))  # a new token makes room: expired ones leave
        return short not in service._verified

    wait_for(forgotten, 5, "the expired token to leave the cache")
    assert kept in service._verified

    tokens = [forge(claims()) for _ in range(_VERIFIED_CACHE_SIZE + 10)]
    for token in tokens:
        service.decode_access(token)
    assert list(service._verified) == tokens[-_VERIFIED_CACHE_SIZE:]


def test_an_expired_token_says_so() -> None:
    service = TokenService(settings())
    with pytest.raises(InvalidToken, match=r"^token expired$"):
        service.decode_access(forge(claims(exp=int(time.time()) - 1)))


@pytest.mark.parametrize(
    "overrides",
    [{"sub": ""}, {"sub": "x" * 65}, {"sid": 123}, {"sid": "x" * 65}, {"jti": "x" * 65}],
    ids=["empty-sub", "long-sub", "number-sid", "long-sid", "long-jti"],
)
def test_identifiers_must_be_short_non_empty_strings(overrides: dict[str, Any]) -> None:
    service = TokenService(settings())
    with pytest.raises(InvalidToken, match=r"^malformed claims$"):
        service.decode_access(forge(claims(**overrides)))


@pytest.mark.parametrize("header", ["jku", "x5u", "cty"])
def test_a_header_with_anything_but_alg_and_typ_is_refused(header: str) -> None:
    # Nothing in a header is ever looked up or trusted: we issue none of these.
    service = TokenService(settings())
    with pytest.raises(InvalidToken, match=r"^unexpected token header$"):
        service.decode_access(forge(claims(), headers={header: "https://attacker.test/k"}))


def test_refresh_tokens_are_256_random_bits_and_only_their_sha256_is_kept() -> None:
    issued = [new_refresh_token() for _ in range(200)]
    assert len({token for token, _ in issued}) == len(issued)
    for token, stored in issued:
        assert len(base64.urlsafe_b64decode(token + "=")) == 32
        assert stored == hashlib.sha256(token.encode()).hexdigest() == hash_refresh_token(token)
