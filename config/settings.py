"""Typed settings read from ``COINLINK_*`` environment variables (and an optional ``.env``).

Every rule about a value lives on its field, so one ``ValidationError`` names every bad
or missing variable at once; :func:`load_settings` turns it into a single
:class:`ConfigError` that the CLI prints before exiting with code 2.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Environment = Literal["development", "test", "production"]
CommaList = Annotated[list[str], NoDecode]

DEV_DATABASE_URL = "sqlite://var/coinlink.sqlite3"
DEV_CORS_ORIGINS = ["http://localhost:8000", "http://127.0.0.1:8000"]
MIN_SECRET_BYTES = 32
MIN_PRODUCTION_BCRYPT_ROUNDS = 12
# Words that mark a value copied from an example file rather than generated.
_PLACEHOLDER_WORDS = (
    "changeme",
    "change-me",
    "change_me",
    "replaceme",
    "replace-me",
    "placeholder",
    "example",
    "your-secret",
    "yoursecret",
    "notasecret",
    "insecure",
    "dummy",
    "xxxxxxxx",
)
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,10}-[A-Z0-9]{2,10}$")
DEFAULT_SYMBOLS = (
    "BTC-USD",
    "ETH-USD",
    "SOL-USD",
    "XRP-USD",
    "ADA-USD",
    "DOGE-USD",
    "AVAX-USD",
    "DOT-USD",
    "LINK-USD",
    "LTC-USD",
)
_ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")
_SECRET_FIELDS = ("jwt_secret", "sentry_dsn")


class ConfigError(Exception):
    """Invalid configuration: ``problems`` names each variable and what is wrong with it."""

    def __init__(self, env: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration for COINLINK_ENV={env}:\n{lines}")


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def parse_rate(value: str) -> tuple[int, float]:
    """``"5/60"`` → (5 requests, per 60 seconds)."""
    try:
        count, period = value.split("/")
        limit, seconds = int(count), float(period)
    except ValueError:
        raise ValueError(f"{value!r} is not <count>/<seconds>") from None
    if limit < 1 or not 0 < seconds <= 86_400:
        raise ValueError(f"{value!r}: count must be >= 1 and seconds in (0, 86400]")
    return limit, seconds


def _is_production(info: ValidationInfo) -> bool:
    return info.data.get("env") == "production"


class Settings(BaseSettings):
    """CoinLink's settings. Field docstrings double as the operator's reference."""

    model_config = SettingsConfigDict(
        env_prefix="COINLINK_",
        env_file=".env",
        extra="ignore",
        env_ignore_empty=True,  # `COINLINK_X=` in an env file means "unset", not ""
        validate_default=True,
        frozen=True,
        use_attribute_docstrings=True,
    )

    env: Environment = "development"
    """``development`` (embedded defaults), ``test`` or ``production`` (strict)."""

    database_url: str | None = None
    """``postgres://user:pass@host:5432/db`` or ``sqlite://path``; default SQLite under ./var/."""

    redis_url: str | None = None
    """``redis://host:6379/0``; unset means the in-process bus (one process only)."""

    redis_prefix: str = Field(default="coinlink:", pattern=r"^[A-Za-z0-9:_.-]{1,64}$")
    """Prefix of every Redis key and channel (deployments sharing one Redis must differ)."""

    jwt_algorithm: Literal["HS256", "EdDSA", "RS256"] = "HS256"
    """Signing algorithm of access tokens: HS256 with the secret, or EdDSA/RS256 with key files."""

    jwt_secret: SecretStr | None = None
    """HMAC secret for access tokens, at least 32 bytes; development generates an ephemeral one."""

    jwt_private_key_file: Path | None = None
    """PEM private key for EdDSA or RS256 (required with those algorithms)."""

    jwt_public_key_file: Path | None = None
    """PEM public key for EdDSA or RS256 (required with those algorithms)."""

    jwt_issuer: str = Field(default="coinlink", min_length=1, max_length=200)
    """``iss`` of access tokens; tokens of any other issuer are refused."""

    jwt_audience: str = Field(default="coinlink-api", min_length=1, max_length=200)
    """``aud`` of access tokens; tokens for any other audience are refused."""

    access_token_ttl_s: int = Field(default=900, ge=30, le=86_400)
    """Lifetime of access tokens in seconds."""

    refresh_token_ttl_s: int = Field(default=604_800, ge=300, le=90 * 86_400)
    """Lifetime of refresh tokens (and idle sessions) in seconds."""

    cors_origins: CommaList = Field(default_factory=list)
    """Comma-separated exact origins allowed by CORS and the WebSocket handshake."""

    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    """bcrypt cost factor; production refuses less than 12."""

    trusted_proxies: CommaList = Field(default_factory=list)
    """Addresses or CIDRs of load balancers whose ``X-Forwarded-For`` is believed."""

    symbols: CommaList = Field(default_factory=lambda: list(DEFAULT_SYMBOLS))
    """Comma-separated market symbols (``BASE-QUOTE``)."""

    provider: Literal["simulator", "replay", "binance", "coinbase", "none"] = "simulator"
    """Where market ticks come from (the market-data feature)."""

    simulator_rate: float = Field(default=5.0, gt=0, le=1000)
    """Simulated ticks per second per symbol (provider ``simulator``)."""

    simulator_seed: int = 42
    """Seed of the simulator: the same seed and symbols give the same prices."""

    replay_path: Path | None = None
    """CSV or JSON-lines file of ticks (provider ``replay``; default: the shipped sample)."""

    replay_speed: float = Field(default=1.0, ge=0, le=10_000)
    """Replay speed as a multiple of real time; 0 plays as fast as possible."""

    replay_loop: bool = True
    """Play the replay file again and again."""

    binance_ws_url: str = "wss://stream.binance.com:9443"
    """Binance WebSocket base URL (provider ``binance``)."""

    binance_rest_url: str = "https://api.binance.com"
    """Binance REST base URL (candle backfill)."""

    binance_quote_aliases: CommaList = Field(default_factory=list)
    """Quote mappings such as ``USD=USDT``, so BTC-USD reads Binance's BTCUSDT."""

    coinbase_ws_url: str = "wss://ws-feed.exchange.coinbase.com"
    """Coinbase Exchange WebSocket URL (provider ``coinbase``)."""

    coinbase_rest_url: str = "https://api.exchange.coinbase.com"
    """Coinbase Exchange REST base URL (candle backfill)."""

    backfill_hours: float = Field(default=24.0, ge=0, le=24 * 30)
    """On taking the lead, fetch this much candle history from providers that have it."""

    staleness_s: float = Field(default=30.0, gt=0, le=86_400)
    """A ticker without an update for longer than this is marked ``stale``."""

    ingest_max_tick_age_s: float = Field(default=60.0, gt=0, le=30 * 86_400)
    """Ticks older than this (exchange time against ours) are dropped as stale."""

    ingest_max_jump_pct: float = Field(default=20.0, gt=0, le=10_000)
    """A tick moving the price more than this percentage from the last one is dropped."""

    ingest_lease_s: float = Field(default=5.0, ge=1, le=60)
    """Lifetime of the ingest leader's lease; another instance takes over within two."""

    admin_ticks: bool = False
    """Enable ``POST /api/v2/admin/ticks`` for admins (the market-data feature)."""

    webhook_allow_private: bool = False
    """Let webhooks reach loopback, private and link-local addresses (the alerts feature)."""

    rate_limits_enabled: bool = True
    """Apply the rate-limit policies below."""

    rate_limit_anonymous: str = "300/60"
    """Requests per seconds for each anonymous client address (``count/seconds``)."""

    rate_limit_user: str = "600/60"
    """Requests per seconds for each signed-in user."""

    rate_limit_login_account: str = "5/60"
    """Login attempts per seconds for one account."""

    rate_limit_login_ip: str = "20/60"
    """Login attempts per seconds from one client address."""

    rate_limit_register: str = "10/3600"
    """Registrations per seconds from one client address."""

    host: str = "127.0.0.1"
    """Address ``coinlink serve`` binds to."""

    port: int = Field(default=8000, ge=1, le=65535)
    """Port ``coinlink serve`` listens on."""

    workers: int | None = Field(default=None, ge=1, le=256)
    """Worker processes; default 1 in development, one per core in production."""

    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=64 * 1024 * 1024)
    """Largest accepted request body; larger ones get 413."""

    docs_enabled: bool = True
    """Serve ``/docs`` and ``/docs/openapi.json``."""

    check_timeout_s: float = Field(default=1.0, gt=0, le=30)
    """Deadline of each ``/readyz`` check."""

    redis_timeout_s: float = Field(default=2.0, gt=0, le=60)
    """Socket and connect timeout of every Redis call."""

    bus_history_size: int = Field(default=100, ge=1, le=100_000)
    """Messages kept per bus channel for recovery after a reconnect."""

    ws_heartbeat_s: float = Field(default=10.0, ge=1, le=300)
    """A WebSocket that got nothing for this long receives a ``heartbeat`` message."""

    ws_ping_interval_s: float = Field(default=20.0, ge=1, le=600)
    """Protocol-level ping to every WebSocket this often."""

    ws_ping_timeout_s: float = Field(default=20.0, ge=1, le=600)
    """A WebSocket whose pong does not come within this time is closed."""

    ws_revalidate_s: float = Field(default=60.0, ge=1, le=3600)
    """How often an authenticated WebSocket's token and session are checked again."""

    ws_max_subscriptions: int = Field(default=200, ge=1, le=10_000)
    """Channels one WebSocket may subscribe to."""

    ws_inbound_rate: float = Field(default=20.0, gt=0, le=10_000)
    """Client messages per second a WebSocket may send, sustained (more closes it, 1008)."""

    ws_inbound_burst: int = Field(default=40, ge=1, le=100_000)
    """Client messages a WebSocket may send at once above the sustained rate."""

    ws_max_connections_per_ip: int = Field(default=100, ge=1, le=1_000_000)
    """Open WebSockets per client address and worker; more get 429 at the handshake."""

    ws_buffer_bytes: int = Field(default=256 * 1024, ge=4096, le=64 * 1024 * 1024)
    """Outgoing bytes a slow WebSocket may have queued before it is closed (1013)."""

    ws_slow_close_s: float = Field(default=10.0, gt=0, le=600)
    """A WebSocket that stays behind (tickers conflated) this long is closed (1013)."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level that is logged."""

    log_format: Literal["json", "console"] | None = None
    """``json`` or ``console``; default console in development, json elsewhere."""

    access_log: bool = True
    """Log one line per HTTP request."""

    sentry_dsn: SecretStr | None = None
    """Enables Sentry error reporting (no PII is sent)."""

    auto_migrate: bool | None = None
    """Apply pending migrations on ``serve``; default on in development, off in production."""

    @field_validator("env", mode="before")
    @classmethod
    def _lower_env(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator(
        "cors_origins", "trusted_proxies", "symbols", "binance_quote_aliases", mode="before"
    )
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        scheme = urlsplit(value).scheme if value else ""
        if _is_production(info):
            if scheme not in ("postgres", "postgresql", "asyncpg"):
                raise ValueError("required in production: a postgres:// URL")
        elif value and scheme not in ("postgres", "postgresql", "asyncpg", "sqlite"):
            raise ValueError("must be a postgres:// or sqlite:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        scheme = urlsplit(value).scheme if value else ""
        if value and scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        if _is_production(info) and not value:
            raise ValueError("required in production: a redis:// URL")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None:
            if _is_production(info) and info.data.get("jwt_algorithm") == "HS256":
                raise ValueError(
                    f"required in production with HS256: at least {MIN_SECRET_BYTES} random bytes"
                )
            return None
        raw = value.get_secret_value()
        if len(raw.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes")
        lowered = raw.lower()
        if any(word in lowered for word in _PLACEHOLDER_WORDS) or len(set(raw)) < 10:
            raise ValueError("looks like a placeholder; generate one with `openssl rand -hex 32`")
        return value

    @field_validator("jwt_private_key_file", "jwt_public_key_file")
    @classmethod
    def _check_key_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if info.data.get("jwt_algorithm", "HS256") == "HS256":
            return value
        if value is None:
            raise ValueError(f"required with COINLINK_JWT_ALGORITHM={info.data['jwt_algorithm']}")
        if not value.is_file():
            raise ValueError(f"no readable file at {value}")
        return value

    @field_validator("binance_ws_url", "binance_rest_url", "coinbase_ws_url", "coinbase_rest_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
            raise ValueError("must be an absolute ws(s):// or http(s):// URL")
        return value.rstrip("/")

    @field_validator("binance_quote_aliases")
    @classmethod
    def _check_aliases(cls, value: list[str]) -> list[str]:
        bad = [item for item in value if not re.fullmatch(r"[A-Za-z0-9]+=[A-Za-z0-9]+", item)]
        if bad:
            raise ValueError(f"not OURS=THEIRS pairs: {', '.join(bad)}")
        return [item.upper() for item in value]

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str], info: ValidationInfo) -> list[str]:
        bad, everyone = [], []
        for item in value:
            try:
                network = ipaddress.ip_network(item, strict=False)
            except ValueError:
                bad.append(item)
                continue
            if network.prefixlen == 0:
                everyone.append(item)
        if bad:
            raise ValueError(f"not addresses or CIDRs: {', '.join(bad)}")
        if everyone and _is_production(info):
            # Trusting every peer lets any client pick its own address for the rate limits.
            raise ValueError(f"{', '.join(everyone)} trusts every client; name the proxies")
        return value

    @field_validator("symbols")
    @classmethod
    def _check_symbols(cls, value: list[str]) -> list[str]:
        symbols = [item.upper() for item in value]
        bad = [item for item in symbols if not _SYMBOL_RE.match(item)]
        if bad:
            raise ValueError(f"not BASE-QUOTE symbols: {', '.join(bad)}")
        if not symbols:
            raise ValueError("at least one symbol is needed")
        return list(dict.fromkeys(symbols))

    @field_validator(
        "rate_limit_anonymous",
        "rate_limit_user",
        "rate_limit_login_account",
        "rate_limit_login_ip",
        "rate_limit_register",
    )
    @classmethod
    def _check_rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str], info: ValidationInfo) -> list[str]:
        bad = [origin for origin in value if not _ORIGIN_RE.match(origin)]
        if bad:
            raise ValueError(f"not exact origins (scheme://host[:port]): {', '.join(bad)}")
        if not value:
            if _is_production(info):
                raise ValueError("required in production: comma-separated exact origins")
            return list(DEV_CORS_ORIGINS)
        return value

    @field_validator("bcrypt_rounds")
    @classmethod
    def _check_rounds(cls, value: int, info: ValidationInfo) -> int:
        if _is_production(info) and value < MIN_PRODUCTION_BCRYPT_ROUNDS:
            raise ValueError(f"must be at least {MIN_PRODUCTION_BCRYPT_ROUNDS} in production")
        return value

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", value):
                raise ValueError("must be an IP address or a host name") from None
        return value

    # Derived values: one place decides each default that depends on the environment.

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or DEV_DATABASE_URL

    @property
    def effective_workers(self) -> int:
        if self.workers:
            return self.workers
        # The cores this process may run on (a container's cpuset), not the host's count.
        return len(os.sched_getaffinity(0)) if self.is_production else 1

    @property
    def effective_log_format(self) -> str:
        return self.log_format or ("console" if self.env == "development" else "json")

    @property
    def effective_auto_migrate(self) -> bool:
        return self.auto_migrate if self.auto_migrate is not None else not self.is_production

    def masked(self) -> dict[str, Any]:
        """The effective settings for display, with secrets and URL passwords masked."""
        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in _SECRET_FIELDS:
                value = "********" if value is not None else None
            elif name in ("database_url", "redis_url") and value:
                value = mask_url_password(value)
            shown[f"COINLINK_{name.upper()}"] = value
        shown["COINLINK_DATABASE_URL"] = mask_url_password(self.effective_database_url)
        shown["COINLINK_WORKERS"] = self.effective_workers
        shown["COINLINK_LOG_FORMAT"] = self.effective_log_format
        shown["COINLINK_AUTO_MIGRATE"] = self.effective_auto_migrate
        return shown


def mask_url_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":********@", 1)
    return parts._replace(netloc=netloc).geturl()


def _env_name(loc: tuple[Any, ...]) -> str:
    return f"COINLINK_{str(loc[0]).upper()}" if loc else "COINLINK_?"


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; raise :class:`ConfigError` naming every problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        env = str(overrides.get("env") or _peek_env())
        problems = []
        for error in exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{_env_name(error['loc'])}: {message}")
        raise ConfigError(env, problems) from None


def _peek_env() -> str:
    return os.environ.get("COINLINK_ENV", "development")


def ephemeral_secret() -> str:
    """A throwaway JWT secret for development and tests; tokens die with the process."""
    return secrets.token_urlsafe(48)
