"""CoinLink: self-hosted real-time crypto market data and price alerts."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("coinlink")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
