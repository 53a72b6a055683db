"""Typed settings read from ``COINLINK_*`` environment variables (and an optional ``.env``).

Settings are grouped by concern, and a group's variables share its prefix:
``COINLINK_WS_HEARTBEAT_S`` is ``settings.ws.heartbeat_s``, ``COINLINK_JWT_SECRET`` is
``settings.jwt.secret``; variables of no group sit at the top. A rule about one value lives on
its field; rules across values (what production requires, what an algorithm needs) live in
one model validator that names every such problem at once. :func:`load_settings` turns a
``ValidationError`` into a single :class:`ConfigError` naming each bad or missing variable,
which the CLI prints before exiting with code 2.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Environment = Literal["development", "test", "production"]

DEV_DATABASE_URL = "sqlite://var/coinlink.sqlite3"
REDIS_CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
"""URL schemes that name a Redis Cluster (coinlink.redis_calls.connect)."""
DEV_CORS_ORIGINS = ("http://localhost:8000", "http://127.0.0.1:8000")
MIN_SECRET_BYTES = 32
MIN_PRODUCTION_BCRYPT_ROUNDS = 12
MIN_STOP_S = 2.0
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
SYMBOL_PATTERN = r"[A-Z0-9]{2,10}-[A-Z0-9]{2,10}"
"""A market symbol, ``BASE-QUOTE`` (also the API documents' pattern)."""
_SYMBOL_RE = re.compile(f"^{SYMBOL_PATTERN}$")
_ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")
_POSTGRES_SCHEMES = ("postgres", "postgresql", "asyncpg")
_MASK = "********"
_ACROSS = "config"  # the error type of a rule across variables


class ConfigError(Exception):
    """Invalid configuration: ``problems`` names each variable and what is wrong with it."""

    def __init__(self, env: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration for COINLINK_ENV={env}:\n{lines}")


# --- value types: each parses and checks one kind of variable ---------------------------


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class RateSpec(NamedTuple):
    """A configured rate-limit policy: ``limit`` requests per ``period_s`` seconds
    (:class:`coinlink.ratelimit.Rate` adds what the limiter derives from it)."""

    limit: int
    period_s: float

    @classmethod
    def parse(cls, text: str) -> RateSpec:
        """``"5/60"`` → five per minute (at most a day per period)."""
        try:
            count, period = text.split("/")
            limit, seconds = int(count), float(period)
        except ValueError:
            raise ValueError(f"{text!r} is not <count>/<seconds>") from None
        if limit < 1 or not 0 < seconds <= 86_400:
            raise ValueError(f"{text!r}: count must be >= 1 and seconds in (0, 86400]")
        return cls(limit, seconds)

    def __str__(self) -> str:
        return f"{self.limit}/{self.period_s:g}"


def _parse_rate(value: Any) -> Any:
    return RateSpec.parse(value) if isinstance(value, str) else value


def _check_exchange_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
        raise ValueError("must be an absolute ws(s):// or http(s):// URL")
    return value.rstrip("/")


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]
# ``"5/60"`` in the environment and when shown, a :class:`RateSpec` in the program.
RateSetting = Annotated[RateSpec, NoDecode, BeforeValidator(_parse_rate), PlainSerializer(str)]
ExchangeUrl = Annotated[str, AfterValidator(_check_exchange_url)]


class _Group(BaseModel):
    """The settings of one concern, read from ``COINLINK_<GROUP>_<FIELD>``."""

    model_config = ConfigDict(
        frozen=True, extra="ignore", validate_default=True, use_attribute_docstrings=True
    )


# --- the groups ------------------------------------------------------------------------


class JwtSettings(_Group):
    """Access tokens: how they are signed and whom they are for."""

    algorithm: Literal["HS256", "EdDSA", "RS256"] = "HS256"
    """Signing algorithm of access tokens: HS256 with the secret, or EdDSA/RS256 with key files."""

    secret: SecretStr | None = None
    """HMAC secret for access tokens, at least 32 bytes; development generates an ephemeral one."""

    private_key_file: Path | None = None
    """PEM private key for EdDSA or RS256 (required with those algorithms)."""

    public_key_file: Path | None = None
    """PEM public key for EdDSA or RS256 (required with those algorithms)."""

    issuer: str = Field(default="coinlink", min_length=1, max_length=200)
    """``iss`` of access tokens; tokens of any other issuer are refused."""

    audience: str = Field(default="coinlink-api", min_length=1, max_length=200)
    """``aud`` of access tokens; tokens for any other audience are refused."""

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        return _generated_secret(value)


def _generated_secret(value: SecretStr | None) -> SecretStr | None:
    """A secret that was generated, not typed or copied from an example."""
    if value is None:
        return None
    raw = value.get_secret_value()
    if len(raw.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes")
    lowered = raw.lower()
    if any(word in lowered for word in _PLACEHOLDER_WORDS) or len(set(raw)) < 10:
        raise ValueError("looks like a placeholder; generate one with `openssl rand -hex 32`")
    return value


class RedisSettings(_Group):
    """The Redis server behind the bus, the leases and the shared rate limits."""

    url: str | None = None
    """``redis://host:6379/0``, or ``redis+cluster://host:6379`` for a Redis Cluster (any one
    node; the rest is discovered); unset means the in-process bus (one process only)."""

    prefix: str = Field(default="coinlink:", pattern=r"^[A-Za-z0-9:_.-]{1,64}$")
    """Prefix of every Redis key and channel (deployments sharing one Redis must differ)."""

    timeout_s: float = Field(default=2.0, gt=0, le=60)
    """Socket and connect timeout of every Redis call."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix", *REDIS_CLUSTER_SCHEMES):
            raise ValueError(
                "must be a redis://, rediss:// or unix:// URL, or redis+cluster:// or "
                "rediss+cluster:// for a Redis Cluster"
            )
        if parts.scheme in REDIS_CLUSTER_SCHEMES and parts.path.strip("/") not in ("", "0"):
            raise ValueError("a Redis Cluster has only database 0: drop the /<db> path")
        return value


class RateLimitSettings(_Group):
    """The rate-limit policies, each ``count/seconds``."""

    anonymous: RateSetting = RateSpec(300, 60)
    """Requests per seconds for each anonymous client address (``count/seconds``)."""

    user: RateSetting = RateSpec(600, 60)
    """Requests per seconds for each signed-in user."""

    login_account: RateSetting = RateSpec(5, 60)
    """Login attempts per seconds for one account."""

    login_ip: RateSetting = RateSpec(20, 60)
    """Login attempts per seconds from one client address."""

    # ``register`` would shadow a method every pydantic model has.
    register_: RateSetting = Field(default=RateSpec(10, 3600), alias="register")
    """Registrations per seconds from one client address."""

    def by_policy(self) -> dict[str, RateSpec]:
        """Each policy's rate under the policy's name."""
        return {field.alias or name: getattr(self, name) for name, field in _fields(self)}


class WebSocketSettings(_Group):
    """``/ws``: liveness, limits per socket and per address, slow consumers."""

    heartbeat_s: float = Field(default=10.0, ge=1, le=300)
    """A WebSocket that got nothing for this long receives a ``heartbeat`` message."""

    ping_interval_s: float = Field(default=20.0, ge=1, le=600)
    """Protocol-level ping to every WebSocket this often."""

    ping_timeout_s: float = Field(default=20.0, ge=1, le=600)
    """A WebSocket whose pong does not come within this time is closed."""

    revalidate_s: float = Field(default=60.0, ge=1, le=3600)
    """How often an authenticated WebSocket's token and session are checked again."""

    max_subscriptions: int = Field(default=200, ge=1, le=10_000)
    """Channels one WebSocket may subscribe to."""

    inbound_rate: float = Field(default=20.0, gt=0, le=10_000)
    """Client frames per second a WebSocket may send, sustained (more closes it, 1008)."""

    inbound_burst: int = Field(default=40, ge=1, le=100_000)
    """Client frames a WebSocket may send at once above the sustained rate."""

    max_connections_per_ip: int = Field(default=100, ge=1, le=1_000_000)
    """Open WebSockets per client address and worker; more get 429 at the handshake."""

    buffer_bytes: int = Field(default=256 * 1024, ge=4096, le=64 * 1024 * 1024)
    """Outgoing bytes a slow WebSocket may have queued before it is closed (1013)."""

    slow_close_s: float = Field(default=10.0, gt=0, le=600)
    """A WebSocket that stays behind (tickers conflated) this long is closed (1013)."""


class WebhookSettings(_Group):
    """Alert webhooks: where they may go and how they are retried."""

    allow_private: bool = False
    """Let webhooks reach loopback, private and link-local addresses."""

    timeout_s: float = Field(default=5.0, gt=0, le=60)
    """Deadline of one webhook POST."""

    retry_base_s: float = Field(default=5.0, ge=0.1, le=600)
    """First retry delay of a failed webhook; doubled per attempt (with jitter), up to 1 h."""


class IngestSettings(_Group):
    """The ingest leader: its lease and which ticks it believes."""

    max_tick_age_s: float = Field(default=60.0, gt=0, le=30 * 86_400)
    """Ticks older than this (exchange time against ours) are dropped as stale."""

    max_jump_pct: float = Field(default=20.0, gt=0, le=10_000)
    """A tick moving the price more than this percentage from the last one is dropped."""

    lease_s: float = Field(default=2.0, ge=1, le=60)
    """Lifetime of the ingest lease: a dead holder is replaced within one (as its grant runs
    out); a stopping one hands over at once. (The ``webhooks`` lease lasts 10 s.)"""


class HttpSettings(_Group):
    """Bounds on slow and greedy HTTP clients (``coinlink serve``; docs/operations.md)."""

    read_timeout_s: float = Field(default=10.0, ge=1, le=60)
    """Seconds a client has to send a request's headers and body, counted from its first
    byte; later: 408 ``request_timeout`` and the connection closes."""

    max_connections_per_ip: int = Field(default=256, ge=1, le=1_000_000)
    """Open connections (HTTP and WebSocket) one address may hold per worker; more are
    answered 429 ``too_many_connections`` and closed. Connections from
    ``COINLINK_TRUSTED_PROXIES`` are not counted: a proxy caps its own clients."""


class ShutdownSettings(_Group):
    """How a server stops on SIGTERM without losing a request (docs/operations.md)."""

    drain_s: float = Field(default=3.0, ge=0, le=60)
    """Seconds it keeps serving after SIGTERM (readiness 503, every response closes its
    connection) so that load balancers stop routing to it, before it stops accepting."""

    budget_s: float = Field(default=8.0, gt=0, le=300)
    """Seconds from SIGTERM to exit, drain included: below the platform's wait before
    SIGKILL (10 s in Docker, ``terminationGracePeriodSeconds`` in Kubernetes)."""


class SimulatorSettings(_Group):
    """The ``simulator`` market provider."""

    rate: float = Field(default=5.0, gt=0, le=1000)
    """Simulated ticks per second per symbol."""

    seed: int = 42
    """Seed of the simulator: the same seed, symbols and start prices give the same prices
    (a new ingest leader starts from the last published ones)."""


class ReplaySettings(_Group):
    """The ``replay`` market provider."""

    path: Path | None = None
    """CSV or JSON-lines file of ticks (default: the shipped sample)."""

    speed: float = Field(default=1.0, ge=0, le=10_000)
    """Replay speed as a multiple of real time; 0 plays as fast as possible."""

    loop: bool = True
    """Play the replay file again and again."""


class BinanceSettings(_Group):
    """The ``binance`` market provider."""

    ws_url: ExchangeUrl = "wss://stream.binance.com:9443"
    """Binance WebSocket base URL."""

    rest_url: ExchangeUrl = "https://api.binance.com"
    """Binance REST base URL (candle backfill)."""

    quote_aliases: CommaList = Field(default_factory=list)
    """Quote mappings such as ``USD=USDT``, so BTC-USD reads Binance's BTCUSDT."""

    @field_validator("quote_aliases")
    @classmethod
    def _check_aliases(cls, value: list[str]) -> list[str]:
        bad = [item for item in value if not re.fullmatch(r"[A-Za-z0-9]+=[A-Za-z0-9]+", item)]
        if bad:
            raise ValueError(f"not OURS=THEIRS pairs: {', '.join(bad)}")
        return [item.upper() for item in value]


class CoinbaseSettings(_Group):
    """The ``coinbase`` market provider."""

    ws_url: ExchangeUrl = "wss://ws-feed.exchange.coinbase.com"
    """Coinbase Exchange WebSocket URL."""

    rest_url: ExchangeUrl = "https://api.exchange.coinbase.com"
    """Coinbase Exchange REST base URL (candle backfill)."""


# --- the settings ----------------------------------------------------------------------


class Settings(BaseSettings):
    """CoinLink's settings. Field docstrings double as the operator's reference."""

    model_config = SettingsConfigDict(
        env_prefix="COINLINK_",
        env_file=".env",
        # COINLINK_WS_HEARTBEAT_S → ws.heartbeat_s: split once, after the group's name.
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="ignore",
        env_ignore_empty=True,  # `COINLINK_X=` in an env file means "unset", not ""
        validate_default=True,
        frozen=True,
        use_attribute_docstrings=True,
    )

    env: Environment = "development"
    """``development`` (embedded defaults), ``test`` or ``production`` (strict)."""

    # Storage and the bus.
    database_url: str | None = None
    """``postgres://user:pass@host:5432/db`` or ``sqlite://path``; default SQLite under ./var/."""

    database_pool_mode: Literal["session", "transaction"] = "session"
    """How the server at the database URL hands out PostgreSQL sessions: ``session`` (PostgreSQL
    itself, or PgBouncer with ``pool_mode = session``) or ``transaction`` (PgBouncer with
    ``pool_mode = transaction``: each transaction may run on another server session, so
    asyncpg's per-session prepared statement cache is turned off)."""

    redis: RedisSettings = RedisSettings()
    bus_history_size: int = Field(default=100, ge=1, le=100_000)
    """Messages kept per bus channel for recovery after a reconnect."""

    # Accounts and access.
    jwt: JwtSettings = JwtSettings()
    access_token_ttl_s: int = Field(default=900, ge=30, le=86_400)
    """Lifetime of access tokens in seconds."""

    refresh_token_ttl_s: int = Field(default=604_800, ge=300, le=90 * 86_400)
    """Lifetime of refresh tokens (and idle sessions) in seconds."""

    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    """bcrypt cost factor; production refuses less than 12."""

    bcrypt_concurrency: int = Field(default=2, ge=1, le=256)
    """Passwords hashed or checked at once per worker (about one a core: more only queue
    for the CPU)."""

    bcrypt_wait_s: float = Field(default=1.0, ge=0, le=60)
    """Seconds a login, registration or password change waits for a free hashing slot;
    beyond that it is answered 503 with ``Retry-After``."""

    refresh_reuse_grace_s: float = Field(default=0.0, ge=0, le=60)
    """A refresh token presented again within this many seconds of its first use (two
    browser tabs) gets the same new tokens again instead of revoking the session; after
    it, reuse revokes. 0 (default): every reuse revokes, as RFC 9700 has it."""

    # HTTP edge.
    host: str = "127.0.0.1"
    """Address ``coinlink serve`` binds to."""

    port: int = Field(default=8000, ge=1, le=65535)
    """Port ``coinlink serve`` listens on."""

    workers: int | None = Field(default=None, ge=1, le=256)
    """Worker processes; default 1 in development, one per core in production."""

    cors_origins: CommaList = Field(default_factory=lambda: list(DEV_CORS_ORIGINS))
    """Comma-separated exact origins allowed by CORS and the WebSocket handshake."""

    trusted_proxies: CommaList = Field(default_factory=list)
    """Addresses or CIDRs of load balancers whose ``X-Forwarded-For`` is believed."""

    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=64 * 1024 * 1024)
    """Largest accepted request body; larger ones get 413."""

    docs_enabled: bool | None = None
    """Serve ``/docs``, ``/docs/openapi.json`` and ``/docs/asyncapi.json``; default on, but
    off in production (the Swagger UI loads its script from a CDN)."""

    metrics_token: SecretStr | None = None
    """Bearer token that ``/metrics`` and ``/readyz``'s leader details require; unset, they
    are open in development and off in production."""

    check_timeout_s: float = Field(default=1.0, gt=0, le=30)
    """Deadline of each ``/readyz`` check."""

    rate_limits_enabled: bool = True
    """Apply the rate-limit policies (``COINLINK_RATE_LIMIT_*``)."""

    rate_limit: RateLimitSettings = RateLimitSettings()
    http: HttpSettings = HttpSettings()
    ws: WebSocketSettings = WebSocketSettings()

    # Market data.
    symbols: CommaList = Field(default_factory=lambda: list(DEFAULT_SYMBOLS))
    """Comma-separated market symbols (``BASE-QUOTE``)."""

    provider: Literal["simulator", "replay", "binance", "coinbase", "none"] = "simulator"
    """Where market ticks come from (the market-data feature)."""

    simulator: SimulatorSettings = SimulatorSettings()
    replay: ReplaySettings = ReplaySettings()
    binance: BinanceSettings = BinanceSettings()
    coinbase: CoinbaseSettings = CoinbaseSettings()
    ingest: IngestSettings = IngestSettings()
    backfill_hours: float = Field(default=24.0, ge=0, le=24 * 30)
    """On taking the lead, fetch this much candle history from providers that have it."""

    staleness_s: float = Field(default=30.0, gt=0, le=86_400)
    """A ticker without an update for longer than this is marked ``stale``."""

    admin_ticks: bool = False
    """Enable ``POST /api/v2/admin/ticks`` for admins (the market-data feature)."""

    # Alerts.
    alerts_max_per_user: int = Field(default=100, ge=1, le=100_000)
    """Alerts one user may have (more: 409 ``alert_limit_reached``)."""

    webhook: WebhookSettings = WebhookSettings()

    # Operations.
    shutdown: ShutdownSettings = ShutdownSettings()
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

    @field_validator("metrics_token")
    @classmethod
    def _check_metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        return _generated_secret(value)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value and urlsplit(value).scheme not in (*_POSTGRES_SCHEMES, "sqlite"):
            raise ValueError("must be a postgres:// or sqlite:// URL")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        bad = []
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                bad.append(item)
        if bad:
            raise ValueError(f"not addresses or CIDRs: {', '.join(bad)}")
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

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        bad = [origin for origin in value if not _ORIGIN_RE.match(origin)]
        if bad:
            raise ValueError(f"not exact origins (scheme://host[:port]): {', '.join(bad)}")
        if not value:
            raise ValueError("at least one origin is needed")
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

    @model_validator(mode="after")
    def _check_together(self) -> Settings:
        """Rules across variables, every broken one reported at once."""
        problems: list[tuple[tuple[str, ...], str]] = []
        if self.jwt.algorithm != "HS256":
            for name in ("private_key_file", "public_key_file"):
                path: Path | None = getattr(self.jwt, name)
                if path is None:
                    problems.append((("jwt", name), f"required with {_env('jwt', 'algorithm')}"))
                elif not path.is_file():
                    problems.append((("jwt", name), f"no readable file at {path}"))
        if self.shutdown.budget_s < self.shutdown.drain_s + MIN_STOP_S:
            problems.append(
                (
                    ("shutdown", "budget_s"),
                    f"must exceed {_env('shutdown', 'drain_s')} by at least {MIN_STOP_S:g} s "
                    "(the time to finish requests and stop after the drain)",
                )
            )
        database = urlsplit(self.database_url or DEV_DATABASE_URL).scheme
        if self.database_pool_mode == "transaction" and database not in _POSTGRES_SCHEMES:
            message = "transaction pooling needs a postgres:// COINLINK_DATABASE_URL (a pooler's)"
            problems.append((("database_pool_mode",), message))
        if self.is_production:
            problems += self._production_problems()
        if problems:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError(_ACROSS, "{message}", {"message": message}),
                        loc=loc,
                        input=None,
                    )
                    for loc, message in problems
                ],
            )
        return self

    def _production_problems(self) -> list[tuple[tuple[str, ...], str]]:
        problems: list[tuple[tuple[str, ...], str]] = []
        url = self.database_url
        if not url or urlsplit(url).scheme not in _POSTGRES_SCHEMES:
            problems.append((("database_url",), "required in production: a postgres:// URL"))
        if not self.redis.url:
            problems.append((("redis", "url"), "required in production: a redis:// URL"))
        if self.jwt.secret is None and self.jwt.algorithm == "HS256":
            problems.append(
                (
                    ("jwt", "secret"),
                    f"required in production with HS256: at least {MIN_SECRET_BYTES} random bytes",
                )
            )
        if "cors_origins" not in self.model_fields_set:
            problems.append(
                (("cors_origins",), "required in production: comma-separated exact origins")
            )
        everyone = [
            item
            for item in self.trusted_proxies
            if ipaddress.ip_network(item, strict=False).prefixlen == 0
        ]
        if everyone:
            # Trusting every peer lets any client pick its own address for the rate limits.
            message = f"{', '.join(everyone)} trusts every client; name the proxies"
            problems.append((("trusted_proxies",), message))
        if self.bcrypt_rounds < MIN_PRODUCTION_BCRYPT_ROUNDS:
            message = f"must be at least {MIN_PRODUCTION_BCRYPT_ROUNDS} in production"
            problems.append((("bcrypt_rounds",), message))
        return problems

    # Derived values: one place decides each default that depends on the environment.

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def effective_database_url(self) -> str:
        url = self.database_url or DEV_DATABASE_URL
        if self.database_pool_mode == "transaction" and urlsplit(url).scheme in _POSTGRES_SCHEMES:
            # Behind a transaction pooler a statement asyncpg prepared on one server session
            # is unknown to the next: unnamed statements only (asyncpg's and Tortoise's option).
            parts = urlsplit(url)
            query = [(k, v) for k, v in parse_qsl(parts.query) if k != "statement_cache_size"]
            url = parts._replace(query=urlencode([*query, ("statement_cache_size", "0")])).geturl()
        return url

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
    def effective_docs_enabled(self) -> bool:
        return self.docs_enabled if self.docs_enabled is not None else not self.is_production

    @property
    def effective_auto_migrate(self) -> bool:
        return self.auto_migrate if self.auto_migrate is not None else not self.is_production

    def masked(self) -> dict[str, Any]:
        """The effective settings by variable name, with secrets and URL passwords masked."""
        shown: dict[str, Any] = {}
        for name, value in self:
            if isinstance(value, _Group):
                for field, info in _fields(value):
                    shown[_env(name, info.alias or field)] = _shown(getattr(value, field))
            else:
                shown[_env(name)] = _shown(value)
        shown["COINLINK_DATABASE_URL"] = mask_url_password(self.effective_database_url)
        shown["COINLINK_WORKERS"] = self.effective_workers
        shown["COINLINK_LOG_FORMAT"] = self.effective_log_format
        shown["COINLINK_AUTO_MIGRATE"] = self.effective_auto_migrate
        return shown


_GROUPS = tuple(
    name
    for name, field in Settings.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, _Group)
)


def _fields(group: _Group) -> list[tuple[str, FieldInfo]]:
    return list(type(group).model_fields.items())


def variables() -> dict[str, FieldInfo]:
    """Every variable the settings read, by name, with its field (default, docstring)."""
    found: dict[str, FieldInfo] = {}
    for name, field in Settings.model_fields.items():
        if name in _GROUPS:
            group = field.annotation
            assert isinstance(group, type) and issubclass(group, _Group)
            for inner, info in group.model_fields.items():
                found[_env(name, info.alias or inner)] = info
        else:
            found[_env(name)] = field
    return found


def _env(*loc: object) -> str:
    """The variable of a setting's location: ``("ws", "heartbeat_s")`` → its variable."""
    return "COINLINK_" + "_".join(str(part) for part in loc if isinstance(part, str)).upper()


def _shown(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return _MASK
    if isinstance(value, str) and "://" in value:
        return mask_url_password(value)
    if isinstance(value, RateSpec | Path):
        return str(value)
    return value


def mask_url_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", f":{_MASK}@", 1)
    return parts._replace(netloc=netloc).geturl()


def _grouped(values: dict[str, Any]) -> dict[str, Any]:
    """Overrides named like the variables (``ws_heartbeat_s=3``) → the settings' shape."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        group = next((g for g in _GROUPS if key.startswith(f"{g}_")), None)
        if group is None:
            nested[key] = value
        else:
            nested.setdefault(group, {})[key.removeprefix(f"{group}_")] = value
    return nested


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; raise :class:`ConfigError` naming every problem.

    ``overrides`` are named like the variables without their prefix (``ws_heartbeat_s=3``)
    and win over the environment.
    """
    values = _grouped(overrides)
    try:
        return Settings(**values)
    except ValidationError as exc:
        errors = exc.errors()
    # A value that does not parse keeps the rules across variables from running: run them
    # again with each such value at its default, so that one message still names everything.
    if not any(error["type"] == _ACROSS for error in errors):
        named = {_env(*error["loc"]) for error in errors}
        try:
            Settings(**_with_defaults(values, [error["loc"] for error in errors]))
        except ValidationError as again:
            errors += [
                error
                for error in again.errors()
                if error["type"] == _ACROSS and _env(*error["loc"]) not in named
            ]
    env = str(overrides.get("env") or os.environ.get("COINLINK_ENV", "development"))
    problems = [
        f"{_env(*error['loc'])}: {str(error['msg']).removeprefix('Value error, ')}"
        for error in errors
    ]
    raise ConfigError(env, problems) from None


def _with_defaults(values: dict[str, Any], locations: list[tuple[Any, ...]]) -> dict[str, Any]:
    """``values`` with the setting at each location set to its default (over the env)."""
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for loc in locations:
        name, *inner = [part for part in loc if isinstance(part, str)]
        field = Settings.model_fields.get(name)
        if field is None:
            continue
        if name in _GROUPS and inner:
            group = field.annotation
            assert isinstance(group, type) and issubclass(group, _Group)
            found = [f for n, f in group.model_fields.items() if inner[0] in (n, f.alias)]
            if found:
                default = found[0].get_default(call_default_factory=True)
                values.setdefault(name, {})[inner[0]] = default
        else:
            values[name] = field.get_default(call_default_factory=True)
    return values


def ephemeral_secret() -> str:
    """A throwaway JWT secret for development and tests; tokens die with the process."""
    return secrets.token_urlsafe(48)
