"""Scores that fade: the one place that knows how a half-life decays a score.

``score.add`` emits a ``clm.score.add`` event; its reducer stores the score's value in
``contact.scores[name]``, when it last changed in ``metrics["scores_changed_at"][name]`` and
its half-life (seconds) in ``metrics["score_half_lives"][name]``. The stored value is the
score *as of its last change*. Nothing rewrites contacts as time passes, so whatever reads a
score with a half-life (conditions, ``clm contacts show``) decays it to the moment it is read
with :func:`current_score`; the reducer decays it the same way before adding, so the value a
rule reads just before an add is the value the add starts from.

A score's half-life is the last one a ``score.add`` gave it: an add without ``half_life``
keeps the score's half-life (one rule that subtracts points does not stop a score fading).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .models import Contact
from .types import MISSING

#: Metric: score name -> when it last changed (``2026-11-02T10:15:00Z``).
CHANGED_AT = "scores_changed_at"
#: Metric: score name -> its half-life in seconds.
HALF_LIVES = "score_half_lives"
#: Scores are kept to this many decimals, stored or decayed.
DIGITS = 4


def decayed(value: float, since: datetime, now: datetime, half_life: float | None) -> float:
    """``value`` set at ``since``, halved for each ``half_life`` seconds until ``now``.

    Never grows: a ``now`` before ``since`` (a late event judged as of its own time) reads the
    value as it was stored.
    """
    if not half_life or half_life <= 0:
        return value
    elapsed = (now - since).total_seconds()
    if elapsed <= 0:
        return value
    factor: float = 0.5 ** (elapsed / half_life)  # a float: the base is positive
    return value * factor


def _half_life(contact: Contact, name: str) -> tuple[float | None, datetime | None]:
    """(half-life, last change) of a score, or (None, None) if it does not fade."""
    metrics = contact.metrics
    half_lives = metrics.get(HALF_LIVES)
    if type(half_lives) is not dict or not half_lives.get(name):
        return None, None
    changed = metrics.get(CHANGED_AT)
    since = changed.get(name) if type(changed) is dict else None
    if not isinstance(since, str):
        return None, None
    return float(half_lives[name]), datetime.fromisoformat(since)


def current_score(contact: Contact, name: str, now: datetime) -> Any:
    """The score ``name`` as of ``now`` (decayed), or ``MISSING`` if the contact has none.

    Called by the generated condition code for every ``contact.scores.<name>`` it reads, so
    a score without a half-life costs only a few dictionary lookups.
    """
    value = contact.scores.get(name, MISSING)
    if value is MISSING:
        return MISSING
    half_life, since = _half_life(contact, name)
    if half_life is None or since is None:
        return value
    return round(decayed(value, since, now, half_life), DIGITS)


def current_scores(contact: Contact, now: datetime) -> dict[str, float]:
    """Every score of the contact as of ``now``: ``contact.scores`` with decay applied."""
    return {name: current_score(contact, name, now) for name in contact.scores}


def add_points(
    contact: Contact,
    name: str,
    points: float,
    *,
    at: datetime,
    at_text: str,
    cap: float | None = None,
    half_life: float | None = None,
) -> None:
    """Decay the score to ``at``, add ``points``, cap it; record when and its half-life.

    ``at_text`` is ``at`` as metrics keep times. The decay before the add uses the half-life
    the score already has; a contact stored before half-lives were recorded has none, and then
    the add's own ``half_life`` applies (what the reducer always did).
    """
    metrics = contact.metrics
    changed_at: dict[str, str] = metrics.setdefault(CHANGED_AT, {})
    half_lives: dict[str, float] = metrics.setdefault(HALF_LIVES, {})
    value = contact.scores.get(name, 0.0)
    known = half_lives.get(name) if name in half_lives else half_life
    if known and name in changed_at:
        value = decayed(value, datetime.fromisoformat(changed_at[name]), at, known)
    value += float(points)
    if cap is not None:
        value = min(value, float(cap))
    contact.scores[name] = round(value, DIGITS)
    changed_at[name] = at_text
    if half_life:
        half_lives[name] = float(half_life)
