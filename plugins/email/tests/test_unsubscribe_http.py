"""The unsubscribe link of a sent email works end to end through ``clm serve``: the one-click
POST of RFC 8058 (what mailbox providers send for ``List-Unsubscribe-Post``) and the page a
person opens, both verifying the token the plugin signed (hook ``check_unsubscribe_token``)."""

from __future__ import annotations

from email import message_from_bytes
from email.policy import default
from urllib.parse import urlsplit

from fastapi.testclient import TestClient

from clm_engine import Engine
from clm_engine.http import create_app
from conftest import send_rule, signup


def sent_link(mail, monkeypatch) -> str:
    monkeypatch.setenv("CLM_EMAIL_UNSUBSCRIBE_URL", "https://crm.example.com/v1/unsubscribe")
    mail.ruleset(send_rule())
    engine = mail.open()
    engine.ingest(signup())
    assert engine.dispatch().outcomes["done"] == 1
    [path] = mail.files()
    message = message_from_bytes(path.read_bytes(), policy=default)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = str(message["List-Unsubscribe"]).strip().split(",")[0].strip("<>")
    engine.close()
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


def test_one_click_post_unsubscribes_and_is_recorded_as_an_event(mail, monkeypatch):
    link = sent_link(mail, monkeypatch)
    db = mail.root / "clm.db"
    with TestClient(create_app(db, [mail.rules])) as client:
        tampered = link[:-2] + ("00" if not link.endswith("00") else "11")
        refused = client.post(tampered, data={"List-Unsubscribe": "One-Click"})
        assert refused.status_code == 403
        other = link.replace("contact=c1", "contact=c2")
        assert client.post(other, data={"List-Unsubscribe": "One-Click"}).status_code == 403
        response = client.post(link, data={"List-Unsubscribe": "One-Click"})
        assert response.status_code == 200
        assert response.json() == {"status": "unsubscribed"}
        # A provider that retries the POST changes nothing more.
        assert client.post(link, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    with Engine(db) as engine:
        contact = engine.contact("c1")
        assert contact.consent["email"] is False
        unsubscribes = [e for e in engine.store.recent_events("c1") if e.type == "unsubscribed"]
        assert len(unsubscribes) == 1
        assert unsubscribes[0].properties == {"channel": "email", "source": "list-unsubscribe"}
        suppressed = engine.store.db.execute(
            "SELECT reason FROM email_suppressions WHERE address = 'c1@example.com'"
        ).fetchall()
        assert suppressed == [("unsubscribed",)]


def test_the_page_a_person_opens_unsubscribes_or_says_the_link_is_not_valid(mail, monkeypatch):
    link = sent_link(mail, monkeypatch)
    with TestClient(create_app(mail.root / "clm.db", [mail.rules])) as client:
        bad = client.get(link.replace("token=", "token=x"))
        assert bad.status_code == 403
        assert "This link is not valid" in bad.text
        page = client.get(link)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "You are unsubscribed" in page.text
        assert client.get("/v1/unsubscribe?contact=c1").status_code == 403
