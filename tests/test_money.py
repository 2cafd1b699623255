"""Money in minor units, shared by the plugins that keep it (referral ledger, warranty prices)."""

from __future__ import annotations

import pytest

from clm_engine.money import format_minor, to_minor


def test_decimal_text_and_whole_numbers_become_minor_units():
    assert to_minor("50.00", "USD") == 5000
    assert to_minor(50, "USD") == 5000
    assert to_minor("1234", "JPY") == 1234  # no minor digits
    with pytest.raises(ValueError, match="more than 2 decimals"):
        to_minor("0.001", "USD")


def test_floats_only_when_asked_and_then_by_their_decimal_text():
    with pytest.raises(ValueError, match="binary floating point"):
        to_minor(19.99, "USD")
    assert to_minor(19.99, allow_float=True) == 1999  # never 1998
    with pytest.raises(ValueError, match="more than 2 decimals"):
        to_minor(0.1 + 0.2, allow_float=True)  # 0.30000000000000004


def test_format_is_exact_with_or_without_a_currency():
    assert format_minor(123456, "USD") == "1,234.56 USD"
    assert format_minor(-500) == "-5.00"
    assert format_minor(1234, "JPY") == "1,234 JPY"
