"""Consent is checked at the moment of sending, not only when the send was claimed.

Unsubscribes commit from another engine while a worker sends through a real SMTP server. A
send that *begins* (MAIL FROM) after the contact's unsubscribe committed would be a message
sent without consent: there must be none. What remains is the SMTP conversation itself: an
unsubscribe that commits while a send is under way does not stop it; the test measures that
window and prints it.
"""

from __future__ import annotations

import threading
import time

import pytest

from clm_engine import Engine
from conftest import send_rule, signup, use_smtp

CONTACTS = 1500


@pytest.mark.slow
def test_an_unsubscribe_committed_before_a_send_begins_always_stops_it(
    mail, smtp_server, monkeypatch
):
    use_smtp(monkeypatch, smtp_server)
    mail.ruleset(send_rule())  # marketing: needs consent
    engine = mail.open()
    engine.ingest_many([signup(f"c{n:04d}") for n in range(CONTACTS)])
    sender_done = threading.Event()

    def send_all() -> None:
        try:
            engine.dispatch()
        finally:
            sender_done.set()

    committed: dict[str, float] = {}  # contact -> when its unsubscribe had committed
    other = Engine(mail.root / "clm.db", clock=mail.clock)  # another process's view
    sender = threading.Thread(target=send_all)
    sender.start()
    try:
        contact = CONTACTS - 1
        while not sender_done.is_set() and contact >= 0:  # from the end: not yet sent
            contact_id = f"c{contact:04d}"
            other.ingest(
                {
                    "contact_id": contact_id,
                    "type": "unsubscribed",
                    "occurred_at": "2026-11-02T12:00:01Z",
                    "properties": {"channel": "email"},
                }
            )
            committed[contact_id] = time.monotonic()
            contact -= 3
            time.sleep(0.002)
    finally:
        sender.join(timeout=300)
        other.close()
    arrived = {m.rcpt_tos[0].split("@")[0]: m for m in smtp_server.messages}
    began_after = [c for c, at in committed.items() if c in arrived and arrived[c].mail_at > at]
    in_flight = [c for c, at in committed.items() if c in arrived and arrived[c].data_at > at]
    assert len(committed) > 100, "the sends ended before enough unsubscribes landed"
    assert began_after == [], f"{len(began_after)} sends began after the unsubscribe committed"
    stopped = sum(
        1
        for c in committed
        for r in engine.store.actions_for(c)
        if r.action == "email.send" and r.status == "vetoed"
    )
    assert stopped + len([c for c in committed if c in arrived]) == len(committed)
    print(
        f"{len(smtp_server.messages)} sent, {len(committed)} unsubscribed while sending: "
        f"{stopped} stopped, {len(in_flight)} arrived while their unsubscribe committed "
        "(the SMTP conversation), 0 begun after it"
    )
