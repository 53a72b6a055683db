"""Webhooks: URL safety (SSRF), signing, and one delivery attempt with its retry policy.

No database here: the outbox and the dispatcher (under a lease) are
:mod:`coinlink.alerts.dispatcher`; these modules talk to the outside world and decide what an
answer means. :mod:`~coinlink.alerts.webhooks.url_safety` refuses non-public receivers and
pins the checked address, :mod:`~coinlink.alerts.webhooks.signing` signs a delivery,
:mod:`~coinlink.alerts.webhooks.delivery` makes one attempt and schedules the next.
"""

from coinlink.alerts.webhooks.delivery import (
    BASE_DELAY_S,
    MAX_AGE_S,
    MAX_ATTEMPTS,
    MAX_DELAY_S,
    DeliveryResult,
    deliver,
    gives_up,
    new_client,
)
from coinlink.alerts.webhooks.signing import USER_AGENT, headers, sign
from coinlink.alerts.webhooks.url_safety import (
    MAX_URL_LENGTH,
    RESOLVE_TIMEOUT_S,
    Resolver,
    UnresolvableUrl,
    UnsafeUrl,
    check_syntax,
    check_url,
    resolve_host,
    unsafe_reason,
)

__all__ = [
    "BASE_DELAY_S",
    "MAX_AGE_S",
    "MAX_ATTEMPTS",
    "MAX_DELAY_S",
    "MAX_URL_LENGTH",
    "RESOLVE_TIMEOUT_S",
    "USER_AGENT",
    "DeliveryResult",
    "Resolver",
    "UnresolvableUrl",
    "UnsafeUrl",
    "check_syntax",
    "check_url",
    "deliver",
    "gives_up",
    "headers",
    "new_client",
    "resolve_host",
    "sign",
    "unsafe_reason",
]
