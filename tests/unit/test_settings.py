"""Settings: embedded defaults, strict production, one message naming every problem."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from config import ConfigError, load_settings
from config.settings import DEV_DATABASE_URL, variables

GOOD_PRODUCTION = {
    "env": "production",
    "database_url": "postgres://coinlink:pw@db:5432/coinlink",
    "redis_url": "redis://cache:6379/0",
    "jwt_secret": "Zq8vN3tR6yB1mK4pX7cW2eH5jL9sD0fG",
    "cors_origins": "https://app.coinlink.io,https://admin.coinlink.io",
}
REQUIRED = {
    "database_url": "COINLINK_DATABASE_URL",
    "redis_url": "COINLINK_REDIS_URL",
    "jwt_secret": "COINLINK_JWT_SECRET",
    "cors_origins": "COINLINK_CORS_ORIGINS",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("COINLINK_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir("/")  # no stray .env file


def test_development_defaults_need_no_servers() -> None:
    settings = load_settings()
    assert settings.env == "development"
    assert settings.effective_database_url == DEV_DATABASE_URL
    assert settings.redis.url is None
    assert settings.jwt.secret is None
    assert settings.cors_origins == ["http://localhost:8000", "http://127.0.0.1:8000"]
    assert settings.effective_workers == 1
    assert settings.effective_log_format == "console"
    assert settings.effective_auto_migrate is True


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COINLINK_PORT", "9001")
    monkeypatch.setenv("COINLINK_CORS_ORIGINS", " https://a.io , https://b.io:8443 ")
    settings = load_settings()
    assert settings.port == 9001
    assert settings.cors_origins == ["https://a.io", "https://b.io:8443"]


def test_good_production_settings_pass() -> None:
    settings = load_settings(**GOOD_PRODUCTION)
    assert settings.is_production
    assert settings.effective_log_format == "json"
    assert settings.effective_auto_migrate is False
    assert settings.effective_workers >= 1


def test_production_without_anything_names_every_missing_value_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env="production")
    message = str(caught.value)
    for variable in REQUIRED.values():
        assert variable in message
    assert len(caught.value.problems) == len(REQUIRED)


@pytest.mark.parametrize("field", sorted(REQUIRED))
def test_each_missing_production_value_is_named(field: str) -> None:
    values = {k: v for k, v in GOOD_PRODUCTION.items() if k != field}
    with pytest.raises(ConfigError) as caught:
        load_settings(**values)
    assert [p.split(":")[0] for p in caught.value.problems] == [REQUIRED[field]]


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [
        ("database_url", "sqlite://var/x.sqlite3", "COINLINK_DATABASE_URL"),
        ("database_url", "mysql://db/x", "COINLINK_DATABASE_URL"),
        ("redis_url", "http://cache", "COINLINK_REDIS_URL"),
        ("redis_url", "redis+cluster://cache:6379/1", "COINLINK_REDIS_URL"),
        ("jwt_secret", "too-short", "COINLINK_JWT_SECRET"),
        ("cors_origins", "*", "COINLINK_CORS_ORIGINS"),
        ("cors_origins", "https://ok.io,null", "COINLINK_CORS_ORIGINS"),
        ("cors_origins", "https://ok.io/path", "COINLINK_CORS_ORIGINS"),
        ("bcrypt_rounds", "11", "COINLINK_BCRYPT_ROUNDS"),
        ("port", "70000", "COINLINK_PORT"),
        ("workers", "0", "COINLINK_WORKERS"),
        ("log_level", "loud", "COINLINK_LOG_LEVEL"),
        ("trusted_proxies", "10.0.0.0/8,0.0.0.0/0", "COINLINK_TRUSTED_PROXIES"),
        ("trusted_proxies", "::/0", "COINLINK_TRUSTED_PROXIES"),
        ("trusted_proxies", "not-an-address", "COINLINK_TRUSTED_PROXIES"),
        ("symbols", "BTC-USD,BTCUSD", "COINLINK_SYMBOLS"),
        ("rate_limit_login_account", "5 per minute", "COINLINK_RATE_LIMIT_LOGIN_ACCOUNT"),
        ("jwt_algorithm", "HS512", "COINLINK_JWT_ALGORITHM"),
    ],
)
def test_each_bad_production_value_is_named(field: str, value: str, variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**{**GOOD_PRODUCTION, field: value})
    assert [p.split(":")[0] for p in caught.value.problems] == [variable]


@pytest.mark.parametrize(
    "secret",
    [
        "change-me-change-me-change-me-change-me",
        "CHANGEME_to_a_real_secret_0123456789abcdef",
        "your-secret-goes-here-0123456789abcdefgh",
        "placeholder-placeholder-placeholder-0123",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "abababababababababababababababababababab",
    ],
)
def test_placeholder_secrets_are_refused(secret: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**{**GOOD_PRODUCTION, "jwt_secret": secret})
    assert caught.value.problems[0].startswith("COINLINK_JWT_SECRET: looks like a placeholder")


def test_secret_length_counts_bytes_not_characters() -> None:
    # 31 ASCII bytes is too short; 16 two-byte characters plus distinct ASCII is long enough.
    with pytest.raises(ConfigError):
        load_settings(jwt_secret="Zq8vN3tR6yB1mK4pX7cW2eH5jL9sD0f")
    assert load_settings(jwt_secret="ÄÖÜäöüßéèêàâçñõø" + "Zq8vN3tR").jwt.secret is not None


def test_test_environment_allows_cheap_bcrypt() -> None:
    assert load_settings(env="test", bcrypt_rounds=4).bcrypt_rounds == 4


def test_masked_hides_secrets_and_url_passwords() -> None:
    shown = load_settings(**GOOD_PRODUCTION, sentry_dsn="https://key@sentry.example/1").masked()
    text = repr(shown)
    assert GOOD_PRODUCTION["jwt_secret"] not in text
    assert "https://key@" not in text
    assert ":pw@" not in text
    assert shown["COINLINK_DATABASE_URL"] == "postgres://coinlink:********@db:5432/coinlink"
    assert shown["COINLINK_JWT_SECRET"] == "********"


def test_key_files_replace_the_secret_with_eddsa(tmp_path) -> None:
    private, public = tmp_path / "jwt.pem", tmp_path / "jwt.pub"
    private.write_text("-----BEGIN PRIVATE KEY-----\n")
    public.write_text("-----BEGIN PUBLIC KEY-----\n")
    values = {k: v for k, v in GOOD_PRODUCTION.items() if k != "jwt_secret"}
    settings = load_settings(
        **values,
        jwt_algorithm="EdDSA",
        jwt_private_key_file=str(private),
        jwt_public_key_file=str(public),
    )
    assert settings.jwt.secret is None
    with pytest.raises(ConfigError) as caught:
        load_settings(**values, jwt_algorithm="EdDSA", jwt_private_key_file=str(private))
    assert [p.split(":")[0] for p in caught.value.problems] == ["COINLINK_JWT_PUBLIC_KEY_FILE"]


def test_rates_are_parsed_once_into_numbers() -> None:
    rates = load_settings(rate_limit_user="5/60", rate_limit_register="1/0.5").rate_limit
    assert rates.by_policy()["user"] == (5, 60.0)
    assert rates.by_policy()["register"] == (1, 0.5)
    assert load_settings(rate_limit_user="5/60").masked()["COINLINK_RATE_LIMIT_USER"] == "5/60"
    with pytest.raises(ConfigError) as caught:
        load_settings(rate_limit_user="0/60", rate_limit_login_ip="5/90000")
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "COINLINK_RATE_LIMIT_USER",
        "COINLINK_RATE_LIMIT_LOGIN_IP",
    ]


def test_grouped_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COINLINK_WS_HEARTBEAT_S", "3")
    monkeypatch.setenv("COINLINK_RATE_LIMIT_REGISTER", "4/60")
    monkeypatch.setenv("COINLINK_BINANCE_QUOTE_ALIASES", "usd=usdt, eur=eurt")
    monkeypatch.setenv("COINLINK_RATE_LIMITS_ENABLED", "false")
    settings = load_settings(ws_inbound_burst=7)
    assert (settings.ws.heartbeat_s, settings.ws.inbound_burst) == (3.0, 7)
    assert settings.rate_limit.by_policy()["register"] == (4, 60.0)
    assert settings.binance.quote_aliases == ["USD=USDT", "EUR=EURT"]
    assert settings.rate_limits_enabled is False


def test_rules_across_variables_and_on_one_value_are_all_named() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env="production", jwt_algorithm="RS256", bcrypt_rounds=10)
    assert sorted(p.split(":")[0] for p in caught.value.problems) == [
        "COINLINK_BCRYPT_ROUNDS",
        "COINLINK_CORS_ORIGINS",
        "COINLINK_DATABASE_URL",
        "COINLINK_JWT_PRIVATE_KEY_FILE",
        "COINLINK_JWT_PUBLIC_KEY_FILE",
        "COINLINK_REDIS_URL",
    ]


@pytest.mark.parametrize(
    "url", ["redis+cluster://cache:6379", "rediss+cluster://:pw@cache:6379/0", "unix:///r.sock"]
)
def test_a_redis_cluster_or_a_socket_may_be_named(url: str) -> None:
    assert load_settings(redis_url=url).redis.url == url


def test_symbols_are_normalised_and_deduplicated() -> None:
    assert load_settings(symbols="btc-usd, ETH-USD,BTC-USD").symbols == ["BTC-USD", "ETH-USD"]


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COINLINK_WORKERS", "")
    monkeypatch.setenv("COINLINK_SENTRY_DSN", "")
    settings = load_settings()
    assert settings.workers is None and settings.sentry_dsn is None


def test_operations_guide_documents_every_variable() -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"`(COINLINK_[A-Z0-9_]+)`", guide))
    assert sorted(set(variables()) - documented) == []
    assert sorted(documented - set(variables())) == []


def test_a_value_that_does_not_parse_hides_no_other_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env="production", jwt_secret="change-me-" * 4, symbols="BTCUSD")
    assert sorted(p.split(":")[0] for p in caught.value.problems) == [
        "COINLINK_CORS_ORIGINS",
        "COINLINK_DATABASE_URL",
        "COINLINK_JWT_SECRET",
        "COINLINK_REDIS_URL",
        "COINLINK_SYMBOLS",
    ]


def test_transaction_pooling_turns_off_the_statement_cache() -> None:
    url = "postgres://coinlink:pw@pgbouncer:6432/coinlink?maxsize=10&statement_cache_size=100"
    settings = load_settings(database_url=url, database_pool_mode="transaction")
    assert settings.effective_database_url == (
        "postgres://coinlink:pw@pgbouncer:6432/coinlink?maxsize=10&statement_cache_size=0"
    )
    assert load_settings(database_url=url).effective_database_url == url


@pytest.mark.parametrize("url", [None, "sqlite://var/x.sqlite3"])
def test_transaction_pooling_needs_postgres(url: str | None) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(database_url=url, database_pool_mode="transaction")
    assert [p.split(":")[0] for p in caught.value.problems] == ["COINLINK_DATABASE_POOL_MODE"]
