"""How long an SMS is: its encoding (GSM-7 or UCS-2) and its segments.

Carriers bill and deliver SMS in segments. A message that fits the GSM 03.38 alphabet is sent
in 7-bit units (septets): 160 in a single message; a longer one is split into parts of 153,
each part losing 7 septets to the header (UDH) that lets the phone join them again. A
character of the GSM extension table (``€ [ ] { } \\ ^ ~ |`` and form feed) takes two
septets (an escape and the character), and a part never ends between the two. One character
outside the alphabet (an emoji, a curly quote, ``ç``) makes the whole message UCS-2: 16-bit
units, 70 in a single message, 67 per part, and a character outside the Basic Multilingual
Plane (most emoji) takes two units that a part never splits.

:func:`segments` gives the parts exactly as a carrier would cut them; the count is what the
``sms.send`` action's ``max_segments`` limits and what ``sms.sent`` records.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The GSM 03.38 default alphabet (the escape, 0x1B, left out: it is not a character).
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: The extension table: each costs two septets.
GSM_EXTENSION = frozenset("\f^{}\\[~]|€")

SINGLE = {"GSM-7": 160, "UCS-2": 70}
PART = {"GSM-7": 153, "UCS-2": 67}


@dataclass(frozen=True)
class Segments:
    """A message's encoding, its length in that encoding's units, and its parts."""

    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or 16-bit code units (UCS-2)
    parts: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.parts)

    @property
    def characters(self) -> int:
        return sum(len(p) for p in self.parts)


def is_gsm7(text: str) -> bool:
    """Whether every character of ``text`` is in the GSM-7 alphabet or its extension."""
    return all(c in GSM_BASIC or c in GSM_EXTENSION for c in text)


def cost(char: str, encoding: str) -> int:
    """Units one character takes."""
    if encoding == "GSM-7":
        return 2 if char in GSM_EXTENSION else 1
    return 2 if ord(char) > 0xFFFF else 1


def segments(text: str) -> Segments:
    """``text`` cut into the parts a carrier sends (one part, possibly empty, at least)."""
    encoding = "GSM-7" if is_gsm7(text) else "UCS-2"
    units = sum(cost(c, encoding) for c in text)
    if units <= SINGLE[encoding]:
        return Segments(encoding, units, (text,))
    limit = PART[encoding]
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for char in text:
        size = cost(char, encoding)
        if used + size > limit:  # the escape pair or surrogate pair goes whole to the next
            parts.append("".join(current))
            current, used = [], 0
        current.append(char)
        used += size
    parts.append("".join(current))
    return Segments(encoding, units, tuple(parts))


def non_gsm_characters(text: str) -> list[str]:
    """The characters that force UCS-2 (to tell an ops person what to replace)."""
    seen: list[str] = []
    for char in text:
        if char not in GSM_BASIC and char not in GSM_EXTENSION and char not in seen:
            seen.append(char)
    return seen
