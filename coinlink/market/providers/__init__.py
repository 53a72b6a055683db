"""Market-data providers behind one async interface (:class:`Provider`).

``create_provider`` picks one by name: ``simulator`` (deterministic GBM, the default for
development), ``replay`` (a recorded CSV/JSON-lines file), ``binance`` and ``coinbase``
(public exchange WebSockets), or ``none`` (no market data: returns ``None``). Modules are
imported lazily so that choosing the simulator never imports the WebSocket client.
"""

from __future__ import annotations

from typing import Any

from coinlink.market.providers.base import (
    STAT_KEYS,
    MalformedError,
    OHLCVRow,
    Provider,
    ProviderError,
)
from config import Settings

PROVIDER_NAMES = ("simulator", "replay", "binance", "coinbase", "none")


def create_provider(name: str, symbols: list[str], **options: Any) -> Provider | None:
    """The provider called ``name`` for ``symbols``; ``options`` go to its constructor.

    Raises ``ValueError`` for an unknown name (and whatever the constructor raises for bad
    options, e.g. a missing replay file).
    """
    kind = name.strip().lower()
    if kind == "none":
        return None
    if kind == "simulator":
        from coinlink.market.providers.simulator import SimulatorProvider

        return SimulatorProvider(symbols, **options)
    if kind == "replay":
        from coinlink.market.providers.replay import ReplayProvider

        # The configured symbols filter the file (every symbol in it if the list is empty).
        return ReplayProvider(symbols=symbols or None, **options)
    if kind == "binance":
        from coinlink.market.providers.binance import BinanceProvider

        return BinanceProvider(symbols, **options)
    if kind == "coinbase":
        from coinlink.market.providers.coinbase import CoinbaseProvider

        return CoinbaseProvider(symbols, **options)
    raise ValueError(f"unknown market provider {name!r}; one of {', '.join(PROVIDER_NAMES)}")


def provider_from_settings(settings: Settings) -> Provider | None:
    """The provider the settings name, with its options from the settings."""
    options: dict[str, Any] = {}
    if settings.provider == "simulator":
        options = {"ticks_per_second": settings.simulator.rate, "seed": settings.simulator.seed}
    elif settings.provider == "replay":
        from coinlink.market.providers.replay import SAMPLE_PATH

        options = {
            "path": settings.replay.path or SAMPLE_PATH,
            "speed": settings.replay.speed,
            "loop": settings.replay.loop,
        }
    elif settings.provider == "binance":
        aliases = dict(item.split("=", 1) for item in settings.binance.quote_aliases)
        options = {
            "ws_url": settings.binance.ws_url,
            "rest_url": settings.binance.rest_url,
            "quote_aliases": aliases,
        }
    elif settings.provider == "coinbase":
        options = {"ws_url": settings.coinbase.ws_url, "rest_url": settings.coinbase.rest_url}
    return create_provider(settings.provider, settings.symbols, **options)


__all__ = [
    "PROVIDER_NAMES",
    "STAT_KEYS",
    "MalformedError",
    "OHLCVRow",
    "Provider",
    "ProviderError",
    "create_provider",
    "provider_from_settings",
]
