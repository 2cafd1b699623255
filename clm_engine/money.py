"""Money as integers of minor units (cents), parsed from exact decimal text: never floats.

Why: ``0.1 + 0.2 != 0.3`` in binary floating point, and a ledger that is off by a cent
cannot be reconciled. Rulesets write amounts as decimal strings (``"50.00"``) or whole
numbers (``50``); they become ``5000`` cents here and stay integers from then on. Events from
a CRM carry JSON numbers (``129.99``): ``allow_float=True`` reads them by their shortest
decimal text, so ``19.99`` is 1999 cents, never 1998. Shared by the plugins that keep money
(the referral ledger, warranty prices), so they agree on it.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

#: Digits after the decimal point, by ISO 4217 code; others default to 2.
MINOR_DIGITS = {"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0, "BHD": 3, "KWD": 3, "TND": 3}


def minor_digits(currency: str) -> int:
    return MINOR_DIGITS.get(currency, 2)


def to_minor(amount: str | int | float, currency: str = "USD", *, allow_float: bool = False) -> int:
    """``"50.00"`` USD -> ``5000``. Raises ``ValueError`` (for an ops person) for a float
    (unless ``allow_float``), a malformed amount, or more decimals than the currency has."""
    allowed = str | int | float if allow_float else str | int
    if isinstance(amount, bool) or not isinstance(amount, allowed):
        raise ValueError(
            f'write an amount as a decimal string such as "50.00" (got {amount!r}): '
            "binary floating point cannot hold cents exactly"
        )
    try:
        value = Decimal(amount.strip() if isinstance(amount, str) else str(amount))
    except InvalidOperation:
        raise ValueError(f'{amount!r} is not a decimal amount like "50.00"') from None
    if not value.is_finite():
        raise ValueError(f'{amount!r} is not a decimal amount like "50.00"')
    digits = minor_digits(currency)
    minor = value.scaleb(digits)
    if minor != minor.to_integral_value():
        raise ValueError(f"{amount} has more than {digits} decimals, the most {currency} has")
    return int(minor)


def format_minor(minor: int, currency: str | None = None) -> str:
    """``5000, "USD"`` -> ``"50.00 USD"``: exact, from the integer (no currency: ``"50.00"``,
    two decimals)."""
    digits = minor_digits(currency or "")
    sign = "-" if minor < 0 else ""
    whole, part = divmod(abs(minor), 10**digits) if digits else (abs(minor), 0)
    text = f"{whole:,}" + (f".{part:0{digits}d}" if digits else "")
    return f"{sign}{text} {currency}" if currency else f"{sign}{text}"
