"""NPS and CSAT surveys: signed response links, and the answer events they turn into.

A rule asks for a survey with the ``survey.request`` action (``clm_engine.builtins.surveys``):
it records a ``survey.requested`` event carrying a response link signed for that contact,
survey and kind, and any channel sends the link from a rule on that event (an email template
writes ``{{ event.properties.url }}``). The person answers on ``clm serve``'s
``/v1/surveys/respond`` page; a valid link records ``nps.answered`` (0-10) or ``csat.answered``
(1-5), the events the reducers turn into facts (``contact.metrics.nps_score``,
``nps_category``, ``csat_score``) and ``clm report`` counts (docs/metrics.md).

The token is an HMAC-SHA256 of (contact, survey, kind) under ``CLM_SURVEY_SECRET``, like the
email plugin's unsubscribe token: nobody answers for someone else by guessing ids, and a link
for a CSAT survey cannot record an NPS score. There is deliberately no default secret: without
one, ``survey.request`` fails with a message that says so and ``clm serve`` refuses answers
(503), rather than signing with a key anyone could read in the source.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

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


class SurveyNotConfigured(Exception):
    """No ``CLM_SURVEY_SECRET``: links can be neither signed nor checked."""


def secret(environ: Mapping[str, str] | None = None) -> bytes:
    value = (os.environ if environ is None else environ).get(SECRET_ENV, "")
    if len(value) < 16:
        raise SurveyNotConfigured(
            f"set {SECRET_ENV} to a secret of at least 16 characters (the same for the engine "
            "that sends survey links and for clm serve, which checks them)"
        )
    return value.encode()


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
