"""NPS and CSAT surveys: a rule asks, a signed link goes out, the answer comes back through a
real ``clm serve`` on 127.0.0.1, becomes facts and the report's NPS/CSAT figures."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from clm_engine import Engine, VirtualClock
from clm_engine.analytics import kpis
from clm_engine.cli import cli
from clm_engine.surveys import SCALES, answer_event, link, token, verify
from tests.helpers import event, store_in
from tests.http_server import running

SECRET = "a-test-secret-of-some-length"

CLOSED = {"fact": "event.properties.status", "op": "eq", "value": "closed"}
RULES = [
    {
        "id": "csat-after-ticket",
        "when": {"event": "support.ticket", "where": CLOSED},
        "then": [{"action": "survey.request", "with": {"survey": "support-csat", "kind": "csat"}}],
    },
    {
        "id": "nps-after-ticket",
        "when": {"event": "support.ticket", "where": CLOSED},
        "then": [{"action": "survey.request", "with": {"survey": "support-nps", "kind": "nps"}}],
    },
    {
        "id": "detractor",
        "when": {
            "event": "nps.answered",
            "where": {"fact": "event.properties.score", "op": "lte", "value": 6},
        },
        "then": [{"action": "tag.add", "with": {"tag": "nps-detractor"}}],
    },
]


def write_rules(folder: Path) -> Path:
    path = folder / "surveys.json"
    path.write_text(json.dumps({"ruleset": "surveys", "version": 1, "rules": RULES}))
    return path


def survey_links(engine: Engine, contact_id: str) -> dict[str, str]:
    """The links the rules sent to a contact, by survey."""
    return {
        e.properties["survey"]: e.properties["url"]
        for e in engine.store.recent_events(contact_id, limit=100)
        if e.type == "survey.requested"
    }


def fields(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@pytest.fixture
def secret(monkeypatch):
    monkeypatch.setenv("CLM_SURVEY_SECRET", SECRET)
    monkeypatch.setenv("CLM_SURVEY_URL", "https://acme.example/v1/surveys/respond")


def test_a_closed_ticket_requests_surveys_with_links_signed_for_the_contact(
    on_store, tmp_path, secret
):
    clock = VirtualClock(datetime(2026, 11, 2, 8, tzinfo=UTC))
    engine = Engine(store_in(tmp_path), clock=clock, rulesets=[write_rules(tmp_path)])
    engine.ingest(event("c1", "support.ticket", "2026-11-02", ticket_id="t-1", status="open"))
    assert survey_links(engine, "c1") == {}
    engine.ingest(event("c1", "support.ticket", "2026-11-03", ticket_id="t-1", status="closed"))
    links = survey_links(engine, "c1")
    assert sorted(links) == ["support-csat", "support-nps"]
    csat = fields(links["support-csat"])
    assert links["support-csat"].startswith("https://acme.example/v1/surveys/respond?")
    assert (csat["contact"], csat["survey"], csat["kind"]) == ("c1", "support-csat", "csat")
    assert verify(SECRET.encode(), "c1", "support-csat", "csat", csat["token"])
    assert not verify(SECRET.encode(), "c2", "support-csat", "csat", csat["token"])
    assert not verify(SECRET.encode(), "c1", "support-csat", "nps", csat["token"])


def test_a_secret_too_short_to_be_a_key_fails_the_request_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("CLM_SURVEY_SECRET", "short")
    engine = Engine(tmp_path / "clm.db", rulesets=[write_rules(tmp_path)])
    engine.ingest(event("c1", "support.ticket", "2026-11-03", ticket_id="t-1", status="closed"))
    assert survey_links(engine, "c1") == {}
    [row, *_] = [r for r in engine.store.actions_for("c1") if r.action == "survey.request"]
    assert "CLM_SURVEY_SECRET must be at least 16 characters" in json.dumps(
        row.__dict__, default=str
    )


def test_without_a_secret_the_store_signs_with_a_key_of_its_own(on_store, tmp_path, monkeypatch):
    monkeypatch.delenv("CLM_SURVEY_SECRET", raising=False)
    with Engine(store_in(tmp_path), rulesets=[write_rules(tmp_path)]) as engine:
        engine.ingest(event("c1", "support.ticket", "2026-11-03", status="closed"))
        engine.ingest(event("c2", "support.ticket", "2026-11-03", status="closed"))
        [key] = engine.store.tables["survey_keys"].rows()
        assert len(key["secret"]) == 64  # 32 random bytes, made once for the store
        for contact in ("c1", "c2"):
            query = fields(survey_links(engine, contact)["support-csat"])
            assert verify(key["secret"].encode(), contact, "support-csat", "csat", query["token"])


@given(
    contact=st.text(min_size=1, max_size=50),
    survey=st.text(min_size=1, max_size=50),
    kind=st.sampled_from(["nps", "csat"]),
)
def test_a_token_verifies_for_its_link_only(contact, survey, kind):
    key = SECRET.encode()
    made = token(key, contact, survey, kind)
    assert verify(key, contact, survey, kind, made)
    assert not verify(key, contact + "x", survey, kind, made)
    assert not verify(b"another-secret-of-16+", contact, survey, kind, made)
    query = fields(link("http://h/p", key, contact, survey, kind))
    assert (query["contact"], query["survey"], query["token"]) == (contact, survey, made)


def test_answers_through_clm_serve_become_facts_and_report_figures(tmp_path, monkeypatch):
    monkeypatch.delenv("CLM_SURVEY_SECRET", raising=False)  # the store's own key
    db = tmp_path / "clm.db"
    rules = write_rules(tmp_path)
    with Engine(db, rulesets=[rules]) as engine:
        for contact in ("c1", "c2", "c3"):
            engine.ingest(event(contact, "signup", "2026-11-01", email=f"{contact}@example.com"))
            engine.ingest(event(contact, "support.ticket", "2026-11-03", status="closed"))
        links = {c: survey_links(engine, c) for c in ("c1", "c2", "c3")}
    with running(db, 1, tmp_path / "serve.log", "--rulesets", str(rules)) as server:
        respond = f"{server.url}/v1/surveys/respond"
        with httpx.Client(timeout=30) as http:
            nps = fields(links["c1"]["support-nps"])
            page = http.get(respond, params={**nps, "score": "3"})
            assert page.status_code == 200
            assert "How likely are you to recommend us" in page.text
            assert 'value="3" checked' in page.text and 'value="10"' in page.text
            # A form post from that page (what a browser sends).
            posted = http.post(respond, data={**nps, "score": "3", "comment": "slow\x00 reply"})
            assert posted.status_code == 200 and "Your answer was recorded" in posted.text
            again = http.post(respond, data={**nps, "score": "3", "comment": "slow\x00 reply"})
            assert again.status_code == 200  # the same answer twice: recorded once
            for contact, score in (("c2", 10), ("c3", 9)):
                answer = http.post(
                    respond, json={**fields(links[contact]["support-nps"]), "score": score}
                )
                assert answer.json() == {"status": "recorded"}
            for contact, score in (("c1", 2), ("c2", 5), ("c3", 4)):
                csat = fields(links[contact]["support-csat"])
                assert http.post(respond, json={**csat, "score": score}).status_code == 200
            # Refused: another contact's token, a score off the scale, a CSAT link used for NPS.
            forged = {**nps, "contact": "c2"}
            assert http.post(respond, json={**forged, "score": 10}).status_code == 403
            assert http.get(respond, params=forged).status_code == 403
            assert http.post(respond, json={**nps, "score": 11}).status_code == 422
            assert http.post(respond, json={**nps, "score": True}).status_code == 422
            assert http.post(respond, data={**nps, "score": "ten"}).status_code == 422
            csat_as_nps = {**fields(links["c1"]["support-csat"]), "kind": "nps"}
            assert http.post(respond, json={**csat_as_nps, "score": 9}).status_code == 403
            assert http.get(respond, params={"kind": "nps"}).status_code == 403
    with Engine(db, rulesets=[rules]) as engine:
        c1 = engine.contact("c1")
        assert c1.metrics["nps_score"] == 3 and c1.metrics["nps_category"] == "detractor"
        assert c1.metrics["csat_score"] == 2 and c1.metrics["csat_satisfied"] is False
        assert "nps-detractor" in c1.tags
        assert engine.contact("c2").metrics["nps_category"] == "promoter"
        answers = [
            e for e in engine.store.recent_events("c1", limit=100) if e.type == "nps.answered"
        ]
        assert len(answers) == 1 and answers[0].properties["comment"] == "slow reply"
        figures = kpis(engine.store.db, now=datetime(2027, 1, 1, tzinfo=UTC), stages=engine.stages)
    [nps_month] = figures["nps_by_month"]
    assert (nps_month["answers"], nps_month["nps"]) == (3, pytest.approx(100 * (2 - 1) / 3, 0.01))
    report = CliRunner().invoke(cli, ["report", "--db", str(db)])
    assert report.exit_code == 0, report.output
    assert "CSAT" in report.output and "NPS" in report.output
    [csat_month] = figures["csat_by_month"]
    assert (csat_month["answers"], csat_month["satisfied"]) == (3, 2)  # 2, 5 and 4


def test_a_store_that_never_signed_a_link_accepts_no_answer(tmp_path, monkeypatch):
    monkeypatch.delenv("CLM_SURVEY_SECRET", raising=False)
    db = tmp_path / "clm.db"
    params = {"contact": "c1", "survey": "s", "kind": "nps", "token": "0" * 32}
    with running(db, 1, tmp_path / "serve.log") as server:
        answer = httpx.post(f"{server.url}/v1/surveys/respond", json={**params, "score": 9})
        assert answer.status_code == 403
    assert answer.json() == {"error": "Please use the link of a recent message."}


def test_an_answer_event_has_the_shape_the_report_reads():
    made = answer_event("c1", "support-csat", "csat", 4, "", "2026-11-03T10:00:00+00:00")
    assert made["type"] == SCALES["csat"].event == "csat.answered"
    assert made["properties"] == {"score": 4, "survey": "support-csat", "channel": "link"}
