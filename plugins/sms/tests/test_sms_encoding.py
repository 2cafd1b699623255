"""Segments as a carrier cuts them: the parts join back to the text, none is over its limit,
and the count agrees with the textbook formula where that formula holds."""

from __future__ import annotations

import math

import pytest
from clm_sms.encoding import GSM_BASIC, GSM_EXTENSION, PART, SINGLE, cost, segments
from hypothesis import given
from hypothesis import strategies as st

GSM = sorted(GSM_BASIC | GSM_EXTENSION)
gsm_text = st.text(alphabet=st.sampled_from(GSM), max_size=700)
any_text = st.text(max_size=500)


def units(part: str, encoding: str) -> int:
    return sum(cost(c, encoding) for c in part)


@given(st.one_of(gsm_text, any_text))
def test_parts_join_to_the_text_and_fit(text):
    found = segments(text)
    assert "".join(found.parts) == text
    limit = SINGLE[found.encoding] if found.count == 1 else PART[found.encoding]
    assert all(units(p, found.encoding) <= limit for p in found.parts)
    assert found.units == units(text, found.encoding)
    # Greedy: no part could have taken the next part's first character.
    for part, following in zip(found.parts, found.parts[1:], strict=False):
        assert units(part, found.encoding) + cost(following[0], found.encoding) > limit


@given(st.text(alphabet=st.sampled_from(sorted(GSM_BASIC)), max_size=1000))
def test_basic_gsm_follows_160_and_153(text):
    found = segments(text)
    assert found.encoding == "GSM-7"
    expected = 1 if len(text) <= 160 else math.ceil(len(text) / 153)
    assert found.count == expected


@given(
    st.text(
        alphabet=st.characters(max_codepoint=0xFFFF, blacklist_categories=("Cs",)),
        min_size=1,
        max_size=600,
    ).filter(lambda t: any(c not in GSM for c in t))
)
def test_bmp_ucs2_follows_70_and_67(text):
    found = segments(text)
    assert found.encoding == "UCS-2"
    expected = 1 if len(text) <= 70 else math.ceil(len(text) / 67)
    assert found.count == expected


@pytest.mark.parametrize(
    ("text", "encoding", "count"),
    [
        ("", "GSM-7", 1),
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("€" * 80, "GSM-7", 1),  # 160 septets
        ("a" + "€" * 80, "GSM-7", 2),
        ("a" * 152 + "€" + "a" * 10, "GSM-7", 2),  # the escape pair is not split: 152 + (2+10)
        ("ç" * 70, "UCS-2", 1),  # lower-case c cedilla is not in GSM-7
        ("ç" * 71, "UCS-2", 2),
        ("😀" * 35, "UCS-2", 1),  # 70 code units
        ("😀" * 36, "UCS-2", 2),
        ("a" * 66 + "😀" + "a" * 10, "UCS-2", 2),  # the surrogate pair is not split
    ],
)
def test_known_lengths(text, encoding, count):
    found = segments(text)
    assert (found.encoding, found.count) == (encoding, count)
