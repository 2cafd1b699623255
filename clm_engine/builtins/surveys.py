"""Surveys: the ``survey.request`` action and the CSAT reducer (NPS's is a core reducer).

See :mod:`clm_engine.surveys` for the links and why they are signed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ..errors import ActionError
from ..hooks import hookimpl
from ..models import Contact, Event, Name
from ..store import Table
from ..surveys import KEYS, SurveyNotConfigured, base_url, link, signing_key
from ..types import ActionContext


class SurveyRequest(BaseModel):
    """``{"action": "survey.request", "with": {"survey": "support-csat", "kind": "csat"}}``."""

    model_config = ConfigDict(extra="forbid")

    survey: Name
    kind: Literal["nps", "csat"]


def request_survey(ctx: ActionContext, params: SurveyRequest) -> dict[str, Any]:
    """Record ``survey.requested`` with the contact's signed response link in ``url``; a rule
    on that event sends it through a channel."""
    if ctx.tables is None:  # registered as internal: always runs in a write transaction
        raise ActionError("survey.request needs the store's tables")
    try:
        key = signing_key(ctx.tables, ctx.now)
    except SurveyNotConfigured as error:
        raise ActionError(str(error)) from None
    url = link(base_url(), key, ctx.contact.id, params.survey, params.kind)
    properties = {"survey": params.survey, "kind": params.kind, "url": url}
    if ctx.event is not None:
        properties["cause"] = ctx.event.type
    ctx.emit("survey.requested", properties)
    return {"survey": params.survey, "kind": params.kind}


def apply_csat(contact: Contact, event: Event) -> None:
    """``csat.answered``: the latest CSAT score (1-5), whether it is satisfied (4-5), when."""
    score = event.properties.get("score")
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
        raise ValueError(f"a CSAT answer needs an integer 'score' from 1 to 5 (got {score!r})")
    contact.metrics.update(
        csat_score=score,
        csat_satisfied=score >= 4,
        csat_answered_at=event.occurred_at_text[:19] + "Z",
    )


@hookimpl
def register_actions(register: Callable[..., None]) -> None:
    register(
        "survey.request",
        request_survey,
        SurveyRequest,
        description="Ask the contact for an NPS or CSAT answer: records survey.requested with "
        "a signed response link (event.properties.url) for a channel's rule to send.",
        pure=True,
    )


@hookimpl
def register_tables(register: Callable[[Table], None]) -> None:
    register(KEYS)


@hookimpl
def register_reducers(register: Callable[..., None]) -> None:
    register("csat.answered", apply_csat, name="core.csat")
