"""Phone numbers: parsed and validated with ``phonenumbers`` (libphonenumber's metadata),
written in E.164 (``+447700900123``), the form SMS APIs take.

"Valid" means a number that exists in its country's numbering plan (right length, an
allocated prefix), not merely digits: ``+44 20`` or ``+1 555 0100`` are refused before a
provider bills a failed attempt.
"""

from __future__ import annotations

import phonenumbers


class NumberError(ValueError):
    """A number that cannot be used; the message says why, for an ops person."""


def e164(raw: str, region: str | None) -> str:
    """``raw`` in E.164; ``region`` reads a number written without ``+`` (``07700 900123``
    in ``GB``). ``NumberError`` says what is wrong."""
    if not isinstance(raw, str) or not raw.strip():
        raise NumberError("no phone number")
    text = raw.strip()
    if len(text) > 40:
        raise NumberError(f"{text[:20]!r}... is too long for a phone number")
    if not text.startswith("+") and not region:
        raise NumberError(
            f"{text!r} has no country code: write it as +<country code><number>, or set the "
            "sms settings' default_region (or the contact's country attribute)"
        )
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else region.upper())  # type: ignore[union-attr] # region is set when there is no +
    except phonenumbers.NumberParseException as error:
        raise NumberError(f"{text!r} is not a phone number ({error._msg})") from None
    if not phonenumbers.is_valid_number(number):
        raise NumberError(f"{text!r} is not a valid number in its country's numbering plan")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def masked(number: str) -> str:
    """A number for logs: ``+44770*****23``."""
    keep = 6 if len(number) > 10 else 3
    return number[:keep] + "*" * max(0, len(number) - keep - 2) + number[-2:]
