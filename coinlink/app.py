"""The application factory.

``create_app`` only builds and wires objects: Sanic calls it in the main process and again
in every worker, so connections (database, bus) and per-process services (logging, Sentry)
start in ``before_server_start`` listeners, once per worker.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

import orjson
import structlog
from sanic import Sanic
from sanic_ext import Extend
from sanic_ext.extensions.http.extension import HTTPExtension

from blueprints import (
    admin,
    alerts,
    auth,
    docs,
    health,
    market,
    notifications,
    realtime,
    users,
)
from coinlink import channels, db, readiness
from coinlink.accounts.profiles import ProfileService
from coinlink.accounts.service import AccountService
from coinlink.accounts.tokens import TokenService
from coinlink.alerts.dispatcher import Dispatcher
from coinlink.alerts.evaluator import Evaluator
from coinlink.alerts.service import AlertService
from coinlink.bus import create_bus
from coinlink.http import middleware
from coinlink.http.auth import user_of
from coinlink.http.client_address import TrustedProxies
from coinlink.http.errors import EnvelopeErrorHandler
from coinlink.http.operator_access import OperatorAccess
from coinlink.http.ratelimit import install as install_rate_limits
from coinlink.http.url_errors import StandInSafeRequest
from coinlink.market.ingest import Ingest
from coinlink.market.providers import provider_from_settings
from coinlink.market.service import MarketService
from coinlink.market.tick_validator import TickValidator
from coinlink.market.view import MarketView
from coinlink.observability import process
from coinlink.observability.logging import configure_logging
from coinlink.observability.metrics import mark_worker_dead
from coinlink.observability.sentry import init_sentry
from coinlink.ratelimit import Policies, RateLimiter
from coinlink.realtime.hub import Hub, HubSettings
from coinlink.serving import heap
from coinlink.serving.connection_cap import ConnectionCap
from coinlink.serving.drain import Drain
from config import Settings, load_settings

log = structlog.get_logger(logger_name="coinlink.app")


def _dumps(obj: object) -> str:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()


def create_app(
    settings: Settings | None = None, *, name: str = "coinlink", alert_pause_s: float = 0.0
) -> Sanic[Any, Any]:
    """The application; ``alert_pause_s`` is fault injection for tests (a pause between an
    alert firing's commit and its publish)."""
    settings = settings or load_settings()
    app = Sanic(
        name,
        configure_logging=False,
        dumps=_dumps,
        error_handler=EnvelopeErrorHandler(),
        request_class=StandInSafeRequest,
    )
    app.config.update(
        REQUEST_MAX_SIZE=settings.max_body_bytes,
        # Sanic's own check counts from the last byte; coinlink.serving.protocol bounds the
        # whole read (headers and body) from the first.
        REQUEST_TIMEOUT=settings.http.read_timeout_s,
        ACCESS_LOG=False,
        # Sanic's wait for requests on their way at shutdown; the drain sets what is left
        # of COINLINK_SHUTDOWN_BUDGET_S (a stop without a drain: Ctrl-C, tests).
        GRACEFUL_SHUTDOWN_TIMEOUT=settings.shutdown.budget_s,
        WEBSOCKET_MAX_SIZE=64 * 1024,
        WEBSOCKET_PING_INTERVAL=settings.ws.ping_interval_s,
        WEBSOCKET_PING_TIMEOUT=settings.ws.ping_timeout_s,
        # sanic-ext: CORS with an exact allowlist, nothing else; its headers only for a
        # request with an Origin (a browser's cross-origin one): sent on every response,
        # they cost the ticker ~6 % of its CPU and tell a client without one nothing.
        CORS_ORIGINS=",".join(settings.cors_origins),
        CORS_ALWAYS_SEND=False,
        CORS_ALLOW_HEADERS="authorization,content-type,x-request-id",
        CORS_EXPOSE_HEADERS=(
            "x-request-id,ratelimit-limit,ratelimit-remaining,ratelimit-reset,retry-after"
        ),
        HEALTH=False,
        HTTP_AUTO_TRACE=False,
    )
    app.ctx.settings = settings
    app.ctx.drain = Drain(settings.shutdown)
    # Only CORS/automatic OPTIONS: the injection extension alone dispatches a signal on
    # every request, which costs /health about a tenth of its throughput. The API documents
    # are our own (blueprints/docs.py), built from the routes' declarations.
    Extend(app, built_in_extensions=False, extensions=[HTTPExtension])

    middleware.install(
        app,
        production=settings.is_production,
        access_log_enabled=settings.access_log,
        drain=app.ctx.drain,
    )
    tokens = TokenService(settings)
    limiter = RateLimiter(
        settings.redis.url,
        prefix=f"{settings.redis.prefix}rl:",
        timeout_s=min(0.25, settings.redis.timeout_s),
    )
    app.ctx.trusted = TrustedProxies(settings.trusted_proxies)
    app.ctx.connection_cap = ConnectionCap(settings.http.max_connections_per_ip, app.ctx.trusted)
    app.ctx.operators = OperatorAccess(settings.metrics_token, production=settings.is_production)
    policies = Policies.from_settings(settings.rate_limit)
    install_rate_limits(app, limiter, policies, app.ctx.trusted, user_of=user_of)
    db.register(app, settings.effective_database_url)
    app.blueprint(health.bp)
    app.blueprint(auth.bp)
    app.blueprint(users.bp)
    app.blueprint(market.bp)
    app.blueprint(admin.bp)
    app.blueprint(alerts.bp)
    app.blueprint(notifications.bp)
    app.blueprint(realtime.bp)
    if settings.effective_docs_enabled:
        app.blueprint(docs.bp)

    async def start_worker(app: Sanic[Any, Any]) -> None:
        configure_logging(settings.log_level, settings.effective_log_format)
        if settings.sentry_dsn is not None:
            init_sentry(settings.sentry_dsn.get_secret_value(), settings.env)
        app.ctx.process_task = asyncio.create_task(process.sample_forever(), name="process")
        app.ctx.heap_task = asyncio.create_task(heap.trim_forever(), name="heap-trim")
        app.ctx.bus = create_bus(
            settings.redis.url,
            prefix=settings.redis.prefix,
            history_size=settings.bus_history_size,
            timeout_s=settings.redis.timeout_s,
        )
        await app.ctx.bus.start()
        await limiter.start()
        app.ctx.accounts = AccountService(settings, tokens, app.ctx.bus)
        await app.ctx.accounts.warm_up()
        view = MarketView(settings.symbols, settings.staleness_s)
        app.ctx.market = MarketService(
            settings.symbols, view, app.ctx.bus, admin_ticks_enabled=settings.admin_ticks
        )
        app.ctx.profiles = ProfileService(
            settings.symbols, webhook_allow_private=settings.webhook.allow_private
        )
        app.ctx.alerts = AlertService(app.ctx.bus, settings.symbols, settings.alerts_max_per_user)
        app.ctx.hub = Hub(
            app.ctx.bus,
            view,
            HubSettings(
                history_size=settings.bus_history_size,
                heartbeat_s=settings.ws.heartbeat_s,
                revalidate_s=settings.ws.revalidate_s,
                slow_close_s=settings.ws.slow_close_s,
                buffer_bytes=settings.ws.buffer_bytes,
            ),
            app.ctx.accounts.access_allowed,
        )
        app.ctx.evaluator = Evaluator(app.ctx.bus, pause_after_commit_s=alert_pause_s)
        app.ctx.hub.on(channels.ALERT_CHANGES, _spawning(app.ctx.evaluator.on_change))
        app.ctx.webhooks = Dispatcher(
            app.ctx.bus,
            allow_private=settings.webhook.allow_private,
            timeout_s=settings.webhook.timeout_s,
            retry_base_s=settings.webhook.retry_base_s,
        )
        app.ctx.hub.on(channels.WEBHOOKS_DUE, app.ctx.webhooks.wake)
        app.ctx.ingest = Ingest(
            app.ctx.bus,
            settings.symbols,
            lambda: provider_from_settings(settings),
            lease_ttl_s=settings.ingest.lease_s,
            backfill_hours=settings.backfill_hours,
            history_size=settings.bus_history_size,
            alerts=app.ctx.evaluator,
            validator_factory=lambda: TickValidator(
                symbols=set(settings.symbols),
                max_age_ms=int(settings.ingest.max_tick_age_s * 1000),
                max_jump_pct=Decimal(str(settings.ingest.max_jump_pct)),
            ),
        )

        def lease_released(name: bytes) -> None:
            app.ctx.ingest.turns.released(name)
            app.ctx.webhooks.turns.released(name)

        app.ctx.hub.on(channels.LEASES_RELEASED, lease_released)
        await app.ctx.hub.start()
        app.ctx.ingest_task = asyncio.create_task(app.ctx.ingest.run(), name="ingest")
        app.ctx.webhooks_task = asyncio.create_task(app.ctx.webhooks.run(), name="webhooks")
        dependencies = {
            "database": readiness.database_check,
            "redis": readiness.bus_check(app.ctx.bus),
        }
        app.ctx.readiness_task = asyncio.create_task(
            readiness.watch(dependencies, settings.check_timeout_s), name="readiness"
        )

    async def stop_jobs() -> None:
        # The singleton jobs hand over to another instance (the drain runs this first, at
        # once): each ends its reign gracefully (a stopping leader publishes its last batch,
        # writes its pending candles) and releases its lease.
        await asyncio.gather(app.ctx.ingest.stop(), app.ctx.webhooks.stop())
        # The last resort, for a reign stuck past its grace: cancelled (a no-op otherwise).
        await asyncio.gather(stop_task(app.ctx.ingest_task), stop_task(app.ctx.webhooks_task))

    async def drain_on_sigterm(app: Sanic[Any, Any]) -> None:
        app.ctx.drain.install(app, stop_jobs)

    async def stop_background(app: Sanic[Any, Any]) -> None:
        # Before the server stops, while the database is open (after Tortoise closes, a write
        # would open a new SQLite thread that keeps the process alive).
        await app.ctx.drain.finish(
            app, stop_jobs(), app.ctx.hub.close(), stop_task(app.ctx.readiness_task)
        )

    async def stop_worker(app: Sanic[Any, Any]) -> None:
        await limiter.close()
        await app.ctx.bus.close()
        await stop_task(app.ctx.process_task)
        await stop_task(app.ctx.heap_task)
        mark_worker_dead(os.getpid())
        app.ctx.drain.finished()

    app.register_listener(start_worker, "before_server_start", priority=1000)
    app.register_listener(drain_on_sigterm, "after_server_start")
    app.register_listener(stop_background, "before_server_stop")
    app.register_listener(stop_worker, "after_server_stop")
    return app


def _spawning(handler: Callable[[bytes], Coroutine[Any, Any, None]]) -> Callable[[bytes], None]:
    """A hub callback (synchronous) that runs an async handler in a task of its own."""
    running: set[asyncio.Task[None]] = set()

    def spawn(data: bytes) -> None:
        task = asyncio.get_running_loop().create_task(handler(data))
        running.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(running.discard)

    return spawn


async def stop_task(task: asyncio.Task[Any], within_s: float = 5.0) -> None:
    """Cancel a worker's background task; never let a stuck one hold up shutdown."""
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=within_s)
    if not done:
        log.error("task_did_not_stop", task=task.get_name(), awaiting=_awaiting(task.get_coro()))


def _awaiting(coro: Any) -> list[str]:
    """Where a suspended coroutine waits, outermost first (for a stuck-task report)."""
    chain = []
    while coro is not None and hasattr(coro, "cr_frame"):
        frame = coro.cr_frame
        if frame is not None:
            chain.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = coro.cr_await
    return chain
