"""How many decimals a price is shown with: about five significant digits, 2 to 8.

The rule exchanges follow for their tick sizes (BTC-USD at 67,012.34, DOGE-USD at
0.15234): never coarser than a cent, never finer than 1e-8. The simulator quotes with it,
and ``/assets`` reports it per asset as ``price_precision``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

MIN_DECIMALS: Final = 2
MAX_DECIMALS: Final = 8
SIGNIFICANT_DIGITS: Final = 5


def price_decimals(price: Decimal | float) -> int:
    """The decimals of ``price``'s tick: ``67012.5`` → 2, ``7.1`` → 4, ``0.15`` → 5."""
    if price <= 0:
        return MAX_DECIMALS
    magnitude = Decimal(price).adjusted()  # exact, unlike log10 near a power of ten
    return min(MAX_DECIMALS, max(MIN_DECIMALS, SIGNIFICANT_DIGITS - 1 - magnitude))


def price_step(price: Decimal | float) -> Decimal:
    """The tick size matching :func:`price_decimals` (``Decimal('0.01')`` for BTC)."""
    return Decimal(1).scaleb(-price_decimals(price))
