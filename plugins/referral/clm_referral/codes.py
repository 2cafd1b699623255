"""Referral codes: unguessable, case-insensitive and easy to read aloud or type from a phone.

Why this shape: a code is shared by people, so it must survive being read over the phone,
typed in lower case, or written with an ``O`` for a zero. Crockford's base32 alphabet has no
``I``, ``L``, ``O`` or ``U``, and decoding maps the look-alikes back (``o`` -> ``0``, ``i``/``l``
-> ``1``). Nine random symbols from :mod:`secrets` give 45 bits (3.5e13 codes), and a tenth
check symbol (a position-weighted sum mod 31) catches a mistyped symbol or two swapped
neighbours before the database is asked (but for ``0`` against ``Z``, equal mod 31), and
turns away 30 of 31 guessed codes. Codes are stored
in their canonical form (upper case, no separator) and shown as ``XXXXX-XXXXX``.
"""

from __future__ import annotations

import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
RANDOM_SYMBOLS = 9
_VALUE = {symbol: value for value, symbol in enumerate(ALPHABET)}
_LOOK_ALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})


def _check_symbol(body: str) -> str:
    # A position-weighted sum catches a changed symbol and most swaps of two neighbours.
    total = sum((position + 1) * _VALUE[symbol] for position, symbol in enumerate(body))
    return ALPHABET[total % 31]  # 31 is prime: every weight is invertible


def new_code() -> str:
    """A fresh random code in canonical form (10 symbols, the last one a check symbol)."""
    body = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_SYMBOLS))
    return body + _check_symbol(body)


def normalise_code(text: str) -> str:
    """The canonical form of a code as a person typed it: case, spaces, dashes and the
    look-alike letters do not matter. Codes imported from elsewhere (``ADA-7``) are normalised
    the same way, so they are looked up the same way."""
    cleaned = "".join(ch for ch in text.upper() if ch not in " -_\t")
    return cleaned.translate(_LOOK_ALIKES)


def is_well_formed(code: str) -> bool:
    """True when a canonical code is one of ours with a correct check symbol."""
    if len(code) != RANDOM_SYMBOLS + 1 or any(ch not in _VALUE for ch in code):
        return False
    return _check_symbol(code[:-1]) == code[-1]


def display_code(code: str) -> str:
    """How a code is shown to people: ``K7QM4-XPZR8`` for ours, imported codes as stored."""
    if is_well_formed(code):
        return f"{code[:5]}-{code[5:]}"
    return code
