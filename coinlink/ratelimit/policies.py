"""The named rate-limit policies, from the settings."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Final

from coinlink.ratelimit.rates import Rate
from config.settings import RateLimitSettings

POLICY_NAMES: Final = ("anonymous", "user", "login_account", "login_ip", "register")


class Policies(Mapping[str, Rate]):
    """The named rates: ``anonymous``, ``user``, ``login_account``, ``login_ip``, ``register``."""

    def __init__(self, rates: Mapping[str, Rate]) -> None:
        missing = set(POLICY_NAMES) - set(rates)
        if missing:
            raise ValueError(f"missing rate-limit policies: {', '.join(sorted(missing))}")
        self._rates = dict(rates)

    @classmethod
    def from_settings(cls, rates: RateLimitSettings) -> Policies:
        return cls({name: Rate(*rate) for name, rate in rates.by_policy().items()})

    def __getitem__(self, name: str) -> Rate:
        return self._rates[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rates)

    def __len__(self) -> int:
        return len(self._rates)

    def __repr__(self) -> str:
        return f"Policies({self._rates!r})"
