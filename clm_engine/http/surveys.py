"""``/v1/surveys/respond``: the page a survey link opens, and the answer it posts.

GET shows the question for a valid link (never records anything: mail scanners and link
previews open links); POST records the answer as ``nps.answered`` / ``csat.answered`` through
the service's one ingest path. The signed token is the credential (see
:mod:`clm_engine.surveys`); no API key is needed, as for the unsubscribe link.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Awaitable
from datetime import UTC
from typing import Any, Protocol
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from .. import surveys
from ..clock import Clock
from ..engine import Engine
from .bodies import read_body

#: The longest comment kept; longer ones are cut (a survey answer, not a document).
MAX_COMMENT = 2000
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><h1>{title}</h1>{body}</body></html>
"""


class _Service(Protocol):
    clock: Clock

    def ingest(self, events: list[dict[str, Any]]) -> Awaitable[Any]: ...

    def engine(self) -> Engine: ...


def survey_routes(app: FastAPI, service: _Service) -> None:
    html_page = {"content": {"text/html": {"schema": {"type": "string"}}}}

    @app.get(
        "/v1/surveys/respond",
        tags=["surveys"],
        response_class=HTMLResponse,
        responses={200: html_page, 403: {**html_page, "description": "not a valid link"}},
    )
    async def question(
        contact: str = "", survey: str = "", kind: str = "", token: str = "", score: str = ""
    ) -> Response:
        """The survey page a link opens: the question and a form that posts the answer
        (HTML; 403 for a link that is not valid, 503 when surveys are not configured)."""
        refused = _check(service, contact, survey, kind, token)
        if refused is not None:
            return _page(*refused)
        scale = surveys.SCALES[kind]
        chosen = int(score) if score.isdigit() else None
        options = "".join(
            f'<label><input type="radio" name="score" value="{n}"'
            f"{' checked' if n == chosen else ''} required> {n}</label> "
            for n in range(scale.low, scale.high + 1)
        )
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{html.escape(value)}">'
            for name, value in (
                ("contact", contact),
                ("survey", survey),
                ("kind", kind),
                ("token", token),
            )
        )
        form = (
            f'<form method="post"><p>{html.escape(scale.question)}</p><p>{options}</p>'
            f'<p><textarea name="comment" maxlength="{MAX_COMMENT}" rows="4" cols="50" '
            f'placeholder="Anything you want to add?"></textarea></p>{hidden}'
            '<p><button type="submit">Send</button></p></form>'
        )
        return _page("Your opinion", form, 200, raw=True)

    @app.post(
        "/v1/surveys/respond",
        tags=["surveys"],
        responses={
            200: {"description": "recorded (HTML for a form post, JSON for a JSON body)"},
            403: {"description": "not a valid link"},
            422: {"description": "no score in the scale"},
        },
    )
    async def answer(request: Request) -> Response:
        """Record an answer: a form post from the survey page, or a JSON body
        ``{"contact", "survey", "kind", "token", "score", "comment"}``. It becomes an
        ``nps.answered`` (0-10) or ``csat.answered`` (1-5) event; the same answer posted twice
        on one day is recorded once."""
        raw = await read_body(request, 16_384)
        as_json = request.headers.get("content-type", "").startswith("application/json")
        fields = _fields(raw, as_json)
        contact, survey, kind, token = (
            str(fields.get(name, "")) for name in ("contact", "survey", "kind", "token")
        )
        reply = _json_reply if as_json else _page
        refused = _check(service, contact, survey, kind, token)
        if refused is not None:
            return reply(*refused)
        scale = surveys.SCALES[kind]
        score = _score(fields.get("score"))
        if score is None or not scale.low <= score <= scale.high:
            return reply(
                "No answer", f"Please choose a score from {scale.low} to {scale.high}.", 422
            )
        comment = _CONTROL.sub("", str(fields.get("comment") or "")).strip()[:MAX_COMMENT]
        now = service.clock.now().astimezone(UTC).isoformat()
        event = surveys.answer_event(contact, survey, kind, score, comment, now)
        outcome = await service.ingest([event])
        if outcome.failed or outcome.rejected:
            reason = outcome.results[0].reason or "the answer was not recorded"
            return reply("Not recorded", reason, 422)
        return reply("Thank you", "Your answer was recorded.", 200)


def _check(
    service: _Service, contact: str, survey: str, kind: str, token: str
) -> tuple[str, str, int] | None:
    """Why a link is refused (title, text, status), or None for a valid one."""
    invalid = ("This link is not valid", "Please use the link of a recent message.", 403)
    if kind not in surveys.SCALES or not all(0 < len(v) <= 200 for v in (contact, survey, token)):
        return invalid
    try:
        key = surveys.checking_key(service.engine().store.tables)
    except surveys.SurveyNotConfigured:
        return ("Surveys are not available", "Please try again later.", 503)
    if key is None or not surveys.verify(key, contact, survey, kind, token):
        return invalid
    return None


def _fields(raw: bytes, as_json: bool) -> dict[str, Any]:
    text = raw.decode("utf-8", errors="replace")
    if as_json:
        try:
            found = json.loads(text)
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}
    return {name: values[0] for name, values in parse_qs(text).items()}


def _score(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 3:
        return int(value.strip())
    return None


def _page(title: str, text: str, status: int, *, raw: bool = False) -> Response:
    body = text if raw else f"<p>{html.escape(text)}</p>"
    return HTMLResponse(PAGE.format(title=html.escape(title), body=body), status)


def _json_reply(title: str, text: str, status: int) -> Response:
    key = "status" if status == 200 else "error"
    return JSONResponse({key: "recorded" if status == 200 else text}, status)
