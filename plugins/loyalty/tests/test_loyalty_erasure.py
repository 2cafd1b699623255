"""GDPR erasure: the contact's ledger rows are pseudonymised, the programme's books still add
up, and nothing left names the contact."""

from __future__ import annotations

import loyalty_testing
from clm_loyalty import ledger
from clm_loyalty.report import report

from clm_engine.testing import make_event

# The shared fixtures this module uses (loyalty_testing.py says why not a conftest.py).
clock = loyalty_testing.clock
open_engine = loyalty_testing.open_engine
rules = loyalty_testing.rules


def history(engine):
    engine.ingest(
        make_event(
            "signup",
            {"email": "ada@example.com", "name": "Ada Lovelace"},
            contact_id="ada",
            at="2026-01-01T10:00:00Z",
        )
    )
    for n, amount in enumerate((700.0, 400.0)):
        engine.ingest(
            make_event(
                "purchase",
                {"amount": amount, "currency": "USD"},
                contact_id="ada",
                at=f"2026-01-0{n + 2}T10:00:00Z",
            )
        )
    engine.ingest(
        make_event("reward.claimed", {"points": 100}, contact_id="ada", at="2026-01-05T10:00:00Z")
    )
    engine.ingest(
        make_event(
            "purchase",
            {"amount": 90.0, "currency": "USD"},
            contact_id="bob",
            at="2026-01-05T10:00:00Z",
        )
    )


def test_forget_pseudonymises_the_ledger_and_keeps_the_books(open_engine, clock, new_store):
    with open_engine() as engine:
        history(engine)
        before = report(engine.store.tables, {}, now=clock.now())["programmes"][0]
        done = engine.forget("ada")
        tables = engine.store.tables
        assert ledger.entries(tables, "ada", "points") == []
        assert done.pseudonymised["loyalty_entries"] == 3
        assert done.pseudonymised["loyalty_tiers"] == 2
        assert done.pseudonymised["loyalty_milestones"] == 2
        alias = done.erasure_id
        book = ledger.book_of(tables, alias, "points")
        assert (book.balance, book.earned, book.redeemed) == (1000, 1100, 100)
        assert all(alias in row["key"] for row in ledger.entries(tables, alias, "points"))
        after = report(tables, {}, now=clock.now())["programmes"][0]
        assert {k: after[k] for k in ("issued", "redeemed", "outstanding", "members")} == {
            k: before[k] for k in ("issued", "redeemed", "outstanding", "members")
        }
        assert ledger.book_of(tables, "bob", "points").balance == 90  # untouched
