"""NPS and CSAT surveys: signed response links, and the answer events they turn into.

A rule asks for a survey with the ``survey.request`` action (``clm_engine.builtins.surveys``):
it records a ``survey.requested`` event carrying a response link signed for that contact,
survey and kind, and any channel sends the link from a rule on that event (an email template
writes ``{{ event.properties.url }}``). The person answers on ``clm serve``'s
``/v1/surveys/respond`` page; a valid link records ``nps.answered`` (0-10) or ``csat.answered``
(1-5), the events the reducers turn into facts (``contact.metrics.nps_score``,
``nps_category``, ``csat_score``) and ``clm report`` counts (docs/metrics.md).

The token is an HMAC-SHA256 of (contact, survey, kind), like the email plugin's unsubscribe
token: nobody answers for someone else by guessing ids, and a link for a CSAT survey cannot
record an NPS score. The key is ``CLM_SURVEY_SECRET`` when set (several stores, or a key kept
in a vault), else a random key the store makes on the first link and keeps in its
``survey_keys`` table, so links work with no set-up and ``clm serve`` on the same store checks
them; there is deliberately no default key anyone could read in the source.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlencode

from .store import Column, Table, Tables

SECRET_ENV = "CLM_SURVEY_SECRET"
URL_ENV = "CLM_SURVEY_URL"
#: Where links point when ``CLM_SURVEY_URL`` is not set: ``clm serve`` on its default port.
DEFAULT_URL = "http://127.0.0.1:8000/v1/surveys/respond"

Kind = Literal["nps", "csat"]


@dataclass(frozen=True)
class Scale:
    """What a kind of survey asks and the event its answer becomes."""

    low: int
    high: int
    event: str
    question: str


SCALES: dict[str, Scale] = {
    "nps": Scale(0, 10, "nps.answered", "How likely are you to recommend us to a friend?"),
    "csat": Scale(1, 5, "csat.answered", "How satisfied were you with the help you got?"),
}


#: The store's own signing key (one row, ``name`` "current"), when no CLM_SURVEY_SECRET is set.
KEYS = Table(
    "survey_keys",
    columns=(
        Column("name", "text"),
        Column("secret", "text", nullable=False),
        Column("created_at", "timestamp"),
    ),
    primary_key=("name",),
    description="The key survey links are signed with (when CLM_SURVEY_SECRET is not set).",
)


class SurveyNotConfigured(Exception):
    """``CLM_SURVEY_SECRET`` is set but too short to be a key."""


def env_secret(environ: Mapping[str, str] | None = None) -> bytes | None:
    value = (os.environ if environ is None else environ).get(SECRET_ENV)
    if value is None or value == "":
        return None
    if len(value) < 16:
        raise SurveyNotConfigured(f"{SECRET_ENV} must be at least 16 characters long")
    return value.encode()


def signing_key(tables: Tables, now: datetime) -> bytes:
    """The key to sign a link with, made and kept in the store the first time (in the
    action's write transaction) unless ``CLM_SURVEY_SECRET`` is set."""
    key = env_secret()
    if key is not None:
        return key
    keys = tables[KEYS.name]
    keys.insert(
        {"name": "current", "secret": secrets.token_hex(32), "created_at": now},
        on_conflict="ignore",
    )
    row = keys.one({"name": "current"})
    assert row is not None  # inserted just now or before
    return str(row["secret"]).encode()


def checking_key(tables: Tables) -> bytes | None:
    """The key to check a link with (read only); None if no link was ever signed."""
    key = env_secret()
    if key is not None:
        return key
    row = tables[KEYS.name].one({"name": "current"})
    return None if row is None else str(row["secret"]).encode()


def base_url(environ: Mapping[str, str] | None = None) -> str:
    return (os.environ if environ is None else environ).get(URL_ENV) or DEFAULT_URL


def token(key: bytes, contact_id: str, survey: str, kind: str) -> str:
    """The token that proves a link was made for this contact, survey and kind."""
    message = "\0".join((contact_id, survey, kind)).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def verify(key: bytes, contact_id: str, survey: str, kind: str, given: str) -> bool:
    return hmac.compare_digest(token(key, contact_id, survey, kind), given)


def link(base: str, key: bytes, contact_id: str, survey: str, kind: str) -> str:
    query = urlencode(
        {
            "contact": contact_id,
            "survey": survey,
            "kind": kind,
            "token": token(key, contact_id, survey, kind),
        }
    )
    return f"{base}{'&' if '?' in base else '?'}{query}"


def answer_event(
    contact_id: str, survey: str, kind: str, score: int, comment: str, occurred_at: str
) -> dict[str, Any]:
    """The event an answer becomes. Its id is one per link, score, comment and day, so a
    double-click or a retried POST is a no-op while a changed answer is recorded."""
    digest = hashlib.sha256(
        "\0".join((contact_id, survey, kind, str(score), comment, occurred_at[:10])).encode()
    ).hexdigest()[:24]
    properties: dict[str, Any] = {"score": score, "survey": survey, "channel": "link"}
    if comment:
        properties["comment"] = comment
    return {
        "id": f"survey-{digest}",
        "contact_id": contact_id,
        "type": SCALES[kind].event,
        "occurred_at": occurred_at,
        "properties": properties,
    }
