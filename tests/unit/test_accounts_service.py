"""AccountService on a real PostgreSQL database and the in-process bus.

Sign-up and sign-in open sessions whose tokens work; refresh rotates within the session and
a spent token seen again revokes it; revocation (logout, password change, deletion, one
session) holds for every worker through the bus, and through the database when the bus is
down or lost its marks. The HTTP shapes of all this are tests/api/test_auth.py's.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from redis.crc import key_slot

from coinlink import channels
from coinlink.accounts import service as service_module
from coinlink.accounts import user_views
from coinlink.accounts.passwords import verify_password
from coinlink.accounts.service import AccountService, AuthError, EmailTaken, Tokens, user_dict
from coinlink.accounts.tokens import AccessClaims, TokenService, hash_refresh_token
from coinlink.bus import RedisBus
from config import load_settings
from models.accounts import RefreshToken, Session, User
from tests.support.accounts import PASSWORD, new_email
from tests.support.apps import TEST_SECRET
from tests.support.buses import FaultyBus
from tests.support.logs import logged_by
from tests.support.metrics import sample
from tests.support.redis_cluster import RedisCluster
from tests.support.services import until

AGENT = "agent/1.0"
IP = "203.0.113.5"
ACCESS_TTL_S = 600


@pytest.fixture
def accounts(db: None) -> AccountService:
    settings = load_settings(
        env="test", jwt_secret=TEST_SECRET, bcrypt_rounds=4, access_token_ttl_s=ACCESS_TTL_S
    )
    return AccountService(settings, TokenService(settings), FaultyBus())


def another_worker(accounts: AccountService) -> AccountService:
    """The same service in another worker: its own memory, the same database and bus."""
    return AccountService(accounts.settings, accounts.tokens, accounts.bus)


def bus_of(accounts: AccountService) -> FaultyBus:
    assert isinstance(accounts.bus, FaultyBus)
    return accounts.bus


async def signed_up(accounts: AccountService, email: str = "") -> tuple[User, Tokens]:
    return await accounts.register(email or new_email(), PASSWORD, "Alice", AGENT, IP)


def claims_of(accounts: AccountService, tokens: Tokens) -> AccessClaims:
    return accounts.tokens.decode_access(tokens.access_token)


async def revocation_events(accounts: AccountService) -> Any:
    subscription = bus_of(accounts).subscription()
    await subscription.subscribe(channels.REVOCATIONS)
    return subscription


async def next_event(subscription: Any) -> Any:
    async with asyncio.timeout(2):
        return orjson.loads((await subscription.__anext__()).data)


# -- sign-up and sign-in -------------------------------------------------------------------


async def test_registering_opens_a_session_whose_tokens_work(accounts: AccountService) -> None:
    long_ip = "2001:0db8:85a3:0000:0000:8a2e:0370:7334%interface-name"
    user, tokens = await accounts.register("a@example.com", PASSWORD, "Alice", AGENT, long_ip)
    claims = claims_of(accounts, tokens)
    assert claims.user_id == str(user.id)
    assert await accounts.access_allowed(claims)
    assert tokens.as_dict() == {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "token_type": "Bearer",
        "expires_in": ACCESS_TTL_S,
    }
    session = await Session.get(id=claims.session_id)
    assert (session.user_agent, session.ip) == (AGENT, long_ip[:45])
    # The refresh token is stored only as its hash; the password only as a bcrypt hash.
    stored = await RefreshToken.get(token_hash=hash_refresh_token(tokens.refresh_token))
    assert stored.session_id == session.id  # type: ignore[attr-defined]
    assert not await RefreshToken.filter(token_hash=tokens.refresh_token).exists()
    assert await verify_password(PASSWORD, user.password_hash)
    assert PASSWORD not in user.password_hash
    shown = user_dict(user)
    assert shown["email"] == "a@example.com" and "password_hash" not in shown


async def test_an_email_registers_once(accounts: AccountService) -> None:
    email = new_email()
    await signed_up(accounts, email)
    with pytest.raises(EmailTaken):
        await signed_up(accounts, email)
    assert await User.filter(email=email).count() == 1
    assert await Session.all().count() == 1  # the failed sign-up left no session behind


async def test_login_opens_another_session_and_failures_look_alike(
    accounts: AccountService,
) -> None:
    user, first = await signed_up(accounts)
    same, second = await accounts.login(user.email, PASSWORD, AGENT, IP)
    assert same.id == user.id
    assert claims_of(accounts, second).session_id != claims_of(accounts, first).session_id

    failures_before = sample("auth_login_failures_total")
    refused = []
    for email, password in [(user.email, "wrong password"), (new_email(), PASSWORD)]:
        with pytest.raises(AuthError) as caught:
            await accounts.login(email, password, AGENT, IP)
        refused.append((caught.value.code, str(caught.value)))
    assert refused == [("invalid_credentials", "email or password is wrong")] * 2
    assert sample("auth_login_failures_total") == failures_before + 2
    assert await Session.filter(user_id=user.id).count() == 2


# -- refresh rotation ----------------------------------------------------------------------


async def test_refresh_rotates_the_token_within_the_session(accounts: AccountService) -> None:
    _, first = await signed_up(accounts)
    session_id = claims_of(accounts, first).session_id
    before = await Session.get(id=session_id)
    second = await accounts.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    assert claims_of(accounts, second).session_id == session_id
    after = await Session.get(id=session_id)
    assert after.expires_at > before.expires_at and after.last_used_at > before.last_used_at
    spent = await RefreshToken.get(token_hash=hash_refresh_token(first.refresh_token))
    assert spent.spent_at is not None
    third = await accounts.refresh(second.refresh_token)  # the successor works in turn
    assert claims_of(accounts, third).session_id == session_id


async def test_a_spent_refresh_token_seen_again_revokes_its_session(
    accounts: AccountService,
) -> None:
    user, first = await signed_up(accounts)
    _, elsewhere = await accounts.login(user.email, PASSWORD, AGENT, IP)
    second = await accounts.refresh(first.refresh_token)
    session_id = claims_of(accounts, first).session_id
    events = await revocation_events(accounts)
    reuse_before = sample("auth_refresh_token_reuse_total")

    with logged_by(service_module, "security_log") as logs, pytest.raises(AuthError) as caught:
        await accounts.refresh(first.refresh_token)
    assert caught.value.code == "token_reused"
    assert sample("auth_refresh_token_reuse_total") == reuse_before + 1
    assert [(e["event"], e["session_id"]) for e in logs if e["log_level"] == "warning"] == [
        ("refresh_token_reuse", session_id)
    ]
    assert await next_event(events) == {"sessions": [session_id]}
    # The whole family is dead: the successor refresh token and its access token too.
    with pytest.raises(AuthError) as successor:
        await accounts.refresh(second.refresh_token)
    assert successor.value.code == "invalid_token"
    assert not await accounts.access_allowed(claims_of(accounts, second))
    assert (await Session.get(id=session_id)).revoked_at is not None
    assert await accounts.access_allowed(claims_of(accounts, elsewhere))  # other sign-ins live


async def test_unknown_and_expired_refresh_tokens_are_refused_without_revoking(
    accounts: AccountService,
) -> None:
    _, tokens = await signed_up(accounts)
    with pytest.raises(AuthError, match=r"^refresh token is not valid$"):
        await accounts.refresh("never-issued")
    await RefreshToken.filter(token_hash=hash_refresh_token(tokens.refresh_token)).update(
        expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    with pytest.raises(AuthError, match=r"^refresh token has expired$") as caught:
        await accounts.refresh(tokens.refresh_token)
    assert caught.value.code == "invalid_token"
    assert await accounts.access_allowed(claims_of(accounts, tokens))


async def test_after_logout_its_refresh_tokens_are_refused_and_not_as_reuse(
    accounts: AccountService,
) -> None:
    _, first = await signed_up(accounts)
    second = await accounts.refresh(first.refresh_token)
    await accounts.logout(claims_of(accounts, second))
    reuse_before = sample("auth_refresh_token_reuse_total")
    # The spent one and the current one alike, and the same answer again.
    for token in (first.refresh_token, second.refresh_token) * 2:
        with pytest.raises(AuthError, match=r"^refresh token is not valid$") as caught:
            await accounts.refresh(token)
        assert caught.value.code == "invalid_token"
    assert sample("auth_refresh_token_reuse_total") == reuse_before


# -- the reuse grace (two browser tabs) -----------------------------------------------------

GRACE_S = 10.0


@pytest.fixture
def tabs(accounts: AccountService) -> AccountService:
    """The service with a reuse grace, on the same database and bus."""
    settings = accounts.settings.model_copy(update={"refresh_reuse_grace_s": GRACE_S})
    return AccountService(settings, accounts.tokens, accounts.bus)


async def test_within_the_grace_a_spent_token_gets_the_same_answer_again(
    tabs: AccountService,
) -> None:
    _, first = await signed_up(tabs)
    reuse_before = sample("auth_refresh_token_reuse_total")
    second = await tabs.refresh(first.refresh_token)
    # The other tab, on another worker: the answer comes through the bus.
    assert await another_worker(tabs).refresh(first.refresh_token) == second
    assert sample("auth_refresh_token_reuse_total") == reuse_before
    assert await tabs.access_allowed(claims_of(tabs, second))
    assert claims_of(tabs, await tabs.refresh(second.refresh_token))  # the successor works
    # What the bus holds is sealed: neither token is in it.
    key = service_module.SUCCESSOR_KEY + hash_refresh_token(first.refresh_token)
    [kept] = await tabs.bus.get_many(key)
    assert kept is not None
    assert second.refresh_token.encode() not in kept
    assert second.access_token.encode() not in kept


async def test_after_the_grace_reuse_revokes_the_session(tabs: AccountService) -> None:
    _, first = await signed_up(tabs)
    second = await tabs.refresh(first.refresh_token)
    late = datetime.now(UTC) - timedelta(seconds=GRACE_S + 1)
    await RefreshToken.filter(token_hash=hash_refresh_token(first.refresh_token)).update(
        spent_at=late
    )
    with pytest.raises(AuthError) as caught:
        await tabs.refresh(first.refresh_token)
    assert caught.value.code == "token_reused"
    assert not await tabs.access_allowed(claims_of(tabs, second))


async def test_within_the_grace_a_lost_answer_revokes_nothing(tabs: AccountService) -> None:
    _, first = await signed_up(tabs)
    second = await tabs.refresh(first.refresh_token)
    bus_of(tabs).lose_everything()
    with pytest.raises(AuthError) as caught:
        await tabs.refresh(first.refresh_token)
    assert caught.value.code == "invalid_token"
    assert "use the tokens that refresh returned" in str(caught.value)
    assert await tabs.access_allowed(claims_of(tabs, second))


# -- revocation ----------------------------------------------------------------------------


async def test_logout_refuses_the_token_and_the_session_on_every_worker(
    accounts: AccountService,
) -> None:
    user, tokens = await signed_up(accounts)
    _, other = await accounts.login(user.email, PASSWORD, AGENT, IP)
    claims = claims_of(accounts, tokens)
    elsewhere = another_worker(accounts)
    assert await elsewhere.access_allowed(claims)  # that worker now trusts it for a while
    events = await revocation_events(accounts)
    await accounts.logout(claims)

    assert not await accounts.access_allowed(claims)
    assert not await elsewhere.access_allowed(claims)  # at once, not when its memory expires
    assert await next_event(events) == {"sessions": [claims.session_id]}  # sockets close
    # Every worker reads these marks (not this one's memory) before each request.
    bus = bus_of(accounts)
    assert await bus.get(f"denied-jti:{claims.jti}") == b"1"
    assert await bus.get(f"revoked-session:{claims.session_id}") == b"1"
    fresh = accounts.tokens.issue_access(claims.user_id, claims.session_id)
    assert not await elsewhere.access_allowed(accounts.tokens.decode_access(fresh.token))
    assert await accounts.access_allowed(claims_of(accounts, other))


async def test_on_a_cluster_a_users_marks_share_one_shard_and_revocation_holds(
    db: None, redis_cluster: RedisCluster, bus_prefix: str
) -> None:
    """Every request's check reads the token's, the session's and the user's keys: on a
    Redis Cluster one MGET on one shard, because every writer names them in one slot."""
    bus = RedisBus(redis_cluster.url, prefix=bus_prefix)
    await bus.start()
    try:
        settings = load_settings(env="test", jwt_secret=TEST_SECRET, bcrypt_rounds=4)
        accounts = AccountService(settings, TokenService(settings), bus)
        user, tokens = await signed_up(accounts)
        claims = claims_of(accounts, tokens)
        elsewhere = another_worker(accounts)
        assert await elsewhere.access_allowed(claims)  # that worker now trusts it for a while
        await accounts.user_changed(str(user.id))
        await accounts.logout(claims)

        assert not await elsewhere.access_allowed(claims)  # at once, from the marks
        written = [key async for key in bus.redis.scan_iter(match=f"{bus_prefix}kv:*")]
        assert len(written) == 3  # the token's, the session's, the user's version
        assert len({redis_cluster.master_of(key.decode()).port for key in written}) == 1
        assert len({key_slot(key) for key in written}) == 1
    finally:
        await bus.close()


async def test_with_the_bus_down_revocation_still_holds_through_the_database(
    accounts: AccountService,
) -> None:
    user, tokens = await signed_up(accounts)
    _, other = await accounts.login(user.email, PASSWORD, AGENT, IP)
    fallbacks_before = sample("auth_revocation_bus_fallbacks_total")
    bus_of(accounts).down = True
    with logged_by(service_module) as logs:
        await accounts.logout(claims_of(accounts, tokens))
    assert "revocation_not_marked_in_bus" in [e["event"] for e in logs]
    assert not await accounts.access_allowed(claims_of(accounts, tokens))
    assert await accounts.access_allowed(claims_of(accounts, other))
    assert sample("auth_revocation_bus_fallbacks_total") == fallbacks_before + 2


async def test_session_checks_leave_the_cache_once_too_old_to_be_used(
    accounts: AccountService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every login opens a session: a cache cleared only at 10,000 grew for hours in a soak.
    monkeypatch.setattr(service_module, "SESSION_CACHE_S", 0.2)
    _, first = await signed_up(accounts)
    _, second = await signed_up(accounts)
    old, new = claims_of(accounts, first), claims_of(accounts, second)
    assert await accounts.access_allowed(old)
    assert old.session_id in accounts._session_cache

    async def left() -> bool:
        assert await accounts.access_allowed(new)
        return old.session_id not in accounts._session_cache

    await until(left, 5, "the old check leaving the cache")
    assert list(accounts._session_cache) == [new.session_id]
    assert await accounts.access_allowed(old)  # checked again, as it would be after 5 s


async def test_without_marks_in_the_bus_the_database_decides(accounts: AccountService) -> None:
    """A session revoked or expired by another instance whose bus marks were lost."""
    _, revoked = await signed_up(accounts)
    _, expired = await signed_up(accounts)
    _, valid = await signed_up(accounts)
    now = datetime.now(UTC)
    await Session.filter(id=claims_of(accounts, revoked).session_id).update(revoked_at=now)
    await Session.filter(id=claims_of(accounts, expired).session_id).update(expires_at=now)
    assert not await accounts.access_allowed(claims_of(accounts, revoked))
    assert not await accounts.access_allowed(claims_of(accounts, expired))
    assert await accounts.access_allowed(claims_of(accounts, valid))


async def test_a_revocation_made_here_holds_here_when_the_bus_loses_its_marks(
    accounts: AccountService,
) -> None:
    _, tokens = await signed_up(accounts)
    claims = claims_of(accounts, tokens)
    assert await accounts.access_allowed(claims)  # valid, as the database said just now
    await accounts.logout(claims)
    bus_of(accounts).lose_everything()  # Redis restarted empty
    assert not await accounts.access_allowed(claims)


async def test_sessions_list_the_live_ones_most_recently_used_first(
    accounts: AccountService,
) -> None:
    user, first = await signed_up(accounts)
    _, second = await accounts.login(user.email, PASSWORD, AGENT, IP)
    _, third = await accounts.login(user.email, PASSWORD, AGENT, IP)
    await signed_up(accounts)  # someone else's
    await accounts.logout(claims_of(accounts, second))
    ids = [claims_of(accounts, t).session_id for t in (first, third)]

    async def listed(limit: int = 10) -> list[str]:
        return [str(s.id) for s in await accounts.list_sessions(str(user.id), limit)]

    assert await listed() == [ids[1], ids[0]]
    await accounts.refresh(first.refresh_token)  # using a session moves it up
    assert await listed() == [ids[0], ids[1]]
    assert await listed(limit=1) == [ids[0]]


async def test_a_user_revokes_their_own_sessions_only(accounts: AccountService) -> None:
    user, mine = await signed_up(accounts)
    _, theirs = await signed_up(accounts)
    my_session = UUID(claims_of(accounts, mine).session_id)
    their_session = UUID(claims_of(accounts, theirs).session_id)
    assert not await accounts.revoke_own_session(str(user.id), their_session)
    assert not await accounts.revoke_own_session(str(user.id), uuid4())
    assert await accounts.access_allowed(claims_of(accounts, theirs))
    assert await accounts.revoke_own_session(str(user.id), my_session)
    assert not await accounts.access_allowed(claims_of(accounts, mine))
    assert not await accounts.revoke_own_session(str(user.id), my_session)  # gone already


async def test_a_password_change_needs_the_current_one_and_ends_the_other_sessions(
    accounts: AccountService,
) -> None:
    user, current = await signed_up(accounts)
    _, other = await accounts.login(user.email, PASSWORD, AGENT, IP)
    current_session = claims_of(accounts, current).session_id
    with pytest.raises(AuthError) as caught:
        await accounts.change_password(user, current_session, "not it at all", "new password 1")
    assert caught.value.code == "invalid_credentials"
    assert await accounts.access_allowed(claims_of(accounts, other))

    await accounts.change_password(user, current_session, PASSWORD, "new password 1")
    assert await accounts.access_allowed(claims_of(accounts, current))
    assert not await accounts.access_allowed(claims_of(accounts, other))
    await accounts.login(user.email, "new password 1", AGENT, IP)
    with pytest.raises(AuthError):
        await accounts.login(user.email, PASSWORD, AGENT, IP)


async def test_deleting_an_account_needs_its_password_and_ends_every_session(
    accounts: AccountService,
) -> None:
    user, tokens = await signed_up(accounts)
    with pytest.raises(AuthError) as caught:
        await accounts.delete_account(user, "not it at all")
    assert caught.value.code == "invalid_credentials"
    assert await User.exists(id=user.id)

    elsewhere = another_worker(accounts)
    assert await elsewhere.access_allowed(claims_of(accounts, tokens))
    await accounts.delete_account(user, PASSWORD)
    assert not await User.exists(id=user.id)
    assert not await accounts.access_allowed(claims_of(accounts, tokens))
    assert not await elsewhere.access_allowed(claims_of(accounts, tokens))
    with pytest.raises(AuthError):
        await accounts.login(user.email, PASSWORD, AGENT, IP)


# -- the per-user views ---------------------------------------------------------------------


async def my_profile(accounts: AccountService, tokens: Tokens) -> dict[str, Any]:
    """``GET /users/me`` as a worker answers it: the access check, then the cached read."""
    claims = claims_of(accounts, tokens)
    allowed, version = await accounts.check_access(claims)
    assert allowed

    async def render() -> bytes | None:
        user = await User.get_or_none(id=claims.user_id)
        return None if user is None else orjson.dumps(user_dict(user))

    body = await accounts.cached_for(claims.user_id, "profile", version, render)
    assert body is not None
    return dict(orjson.loads(body))


async def test_a_change_through_one_worker_is_seen_by_every_worker_at_once(
    accounts: AccountService,
) -> None:
    user, tokens = await signed_up(accounts)
    other = another_worker(accounts)
    assert await my_profile(accounts, tokens) == await my_profile(other, tokens) == user_dict(user)
    assert len(accounts.views) == len(other.views) == 1
    # A change behind the service's back is not seen while the bus says nothing changed:
    # the answers come from each worker's cache, without a database read.
    await User.filter(id=user.id).update(display_name="Behind")
    assert (await my_profile(other, tokens))["display_name"] == "Alice"
    # A change through a service (PATCH /users/me on the first worker) marks the bus.
    user.display_name = "Bob"
    await user.save(update_fields=["display_name"])
    await accounts.user_changed(str(user.id))
    for worker in (accounts, other):
        assert (await my_profile(worker, tokens))["display_name"] == "Bob"


async def test_without_the_bus_the_database_answers_and_nothing_is_kept(
    accounts: AccountService,
) -> None:
    user, tokens = await signed_up(accounts)
    bus_of(accounts).down = True
    assert (await my_profile(accounts, tokens))["id"] == str(user.id)
    assert len(accounts.views) == 0
    await User.filter(id=user.id).update(display_name="Carol")
    assert (await my_profile(accounts, tokens))["display_name"] == "Carol"
    # A change while the bus is down is still made (and logged): entries expire anyway.
    with logged_by(user_views) as logs:
        await accounts.user_changed(str(user.id))
    assert [e["event"] for e in logs] == ["user_change_not_marked_in_bus"]
