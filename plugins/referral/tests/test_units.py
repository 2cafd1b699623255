"""The parts that need no engine: codes, emails, money, the ledger, fraud checks, reports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from clm_referral import attribution, checks, ledger
from clm_referral.codes import display_code, is_well_formed, new_code, normalise_code
from clm_referral.emails import normalise_email
from clm_referral.facts import balance, referral_count, successful_count
from clm_referral.fraud import Claim, FraudSettings, get_fraud_checks, run_checks
from clm_referral.report import format_report, report
from clm_referral.schema import TABLE_NAMES, TABLES
from hypothesis import given, settings
from hypothesis import strategies as st

from clm_engine import Contact, Event, Registry, StoreError, hookimpl
from clm_engine.money import format_minor, to_minor
from clm_engine.testing import declared_tables

T0 = "2026-05-01T10:00:00.000000Z"


@pytest.fixture
def db():
    """The plugin's tables on a fresh store, in one write transaction."""
    with declared_tables(TABLES) as tables:
        yield tables


# -- codes -------------------------------------------------------------------------------------


def test_codes_are_unique_checked_and_read_back_however_typed():
    codes = {new_code() for _ in range(2000)}
    assert len(codes) == 2000
    code = next(iter(codes))
    assert is_well_formed(code) and len(code) == 10
    assert set(code) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    shown = display_code(code)
    assert shown[5] == "-"
    assert normalise_code(shown.lower()) == code
    assert normalise_code(f" {code[:3]} {code[3:]} ".lower()) == code
    # Look-alike letters are read as the digits they resemble.
    assert normalise_code("o1l-ii") == "01111"


def test_a_typo_fails_the_check_symbol():
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    for _ in range(50):
        code = new_code()
        for position in range(len(code) - 1):
            for symbol in alphabet:
                changed = code[:position] + symbol + code[position + 1 :]
                # Weights are invertible mod 31: any change is caught, but for 0 <-> Z
                # (values 0 and 31, equal mod 31).
                if {symbol, code[position]} != {"0", "Z"} and symbol != code[position]:
                    assert not is_well_formed(changed), (code, changed)
        swapped = code[1] + code[0] + code[2:]  # neighbours swapped: caught the same way
        assert not is_well_formed(swapped) or code[0] == code[1] or {code[0], code[1]} == {"0", "Z"}


def test_codes_one_per_contact_created_on_demand_and_rotated(db):
    code, created = attribution.ensure_code(db, "c1", at=T0)
    assert created
    assert attribution.ensure_code(db, "c1", at=T0) == (code, False)
    assert attribution.lookup_code(db, display_code(code).lower())["contact_id"] == "c1"
    rotated, created = attribution.ensure_code(db, "c1", at=T0, rotate=True)
    assert created and rotated != code
    assert attribution.code_of(db, "c1") == rotated
    assert attribution.lookup_code(db, code)["retired_at"] == T0
    with pytest.raises(StoreError):  # one active code per contact, by a partial index
        db["referral_codes"].insert({"code": "X", "contact_id": "c1"})
    assert db["referral_codes"].insert({"code": "Y", "contact_id": "c1", "retired_at": T0})


# -- emails and money ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "mailbox"),
    [
        ("Ada.Lovelace+refer@GMail.com", "adalovelace@gmail.com"),
        ("a.d.a@googlemail.com", "ada@gmail.com"),
        ("ada.l+x@example.org", "ada.l@example.org"),
        ("ADA@Example.org", "ada@example.org"),
    ],
)
def test_email_normalisation(address, mailbox):
    assert normalise_email(address) == mailbox


def test_money_is_exact_minor_units():
    assert to_minor("50.00", "USD") == 5000
    assert to_minor(50, "USD") == 5000
    assert to_minor("0.10", "USD") + to_minor("0.20", "USD") == to_minor("0.30", "USD")
    assert to_minor("500", "JPY") == 500
    assert format_minor(5000, "USD") == "50.00 USD"
    assert format_minor(-123456, "USD") == "-1,234.56 USD"
    with pytest.raises(ValueError, match="more than 2 decimals"):
        to_minor("1.005", "USD")
    with pytest.raises(ValueError, match="decimal string"):
        to_minor(50.0, "USD")  # type: ignore[arg-type]  # the wrong type is the point of the test
    with pytest.raises(ValueError, match="not a decimal"):
        to_minor("fifty", "USD")


# -- the ledger ----------------------------------------------------------------------------------


def _grant(referred="c2", referrer="c1", role="referrer", amount=5000, **extra) -> ledger.Grant:
    return ledger.Grant(
        referred_contact_id=referred,
        referrer_contact_id=referrer,
        role=role,
        kind=extra.pop("kind", "onboarding"),
        amount_minor=amount,
        currency="USD",
        earned_at=extra.pop("earned_at", T0),
        created_at=T0,
        approve_after="2026-05-15T10:00:00.000000Z",
        **extra,
    )


def test_a_reward_is_granted_once_whatever_asks_again(db):
    assert ledger.grant(db, _grant(), actor="test")
    assert not ledger.grant(db, _grant(amount=9999), actor="test")
    assert db["referral_rewards"].count() == 1
    assert ledger.balances(db, "c1") == {"USD": {"pending": 5000, "available": 0}}
    assert ledger.check_balanced(db) == {}


def test_states_move_by_new_entries_and_balances_follow(db):
    g = _grant()
    ledger.grant(db, g, actor="test")
    ledger.transition(db, g.id, "approve", at=T0, actor="auto-approval")
    assert ledger.balances(db, "c1") == {"USD": {"pending": 0, "available": 5000}}
    ledger.transition(db, g.id, "redeem", at=T0, actor="redemption", reason="payout 1")
    assert ledger.balances(db, "c1") == {"USD": {"pending": 0, "available": 0}}
    ledger.transition(db, g.id, "reverse", at=T0, actor="rule", reason="refund")
    # A clawback after the payout: the referrer owes it, against future rewards.
    assert ledger.balances(db, "c1") == {"USD": {"pending": 0, "available": -5000}}
    kinds = [(e["kind"], e["state"]) for e in ledger.entries(db, "c1")]
    assert kinds == [
        ("credit", "pending"),
        ("approve", "approved"),
        ("redeem", "redeemed"),
        ("reverse", "reversed"),
    ]
    assert all(
        sum(line["amount_minor"] for line in e["lines"]) == 0 for e in ledger.entries(db, "c1")
    )
    assert ledger.check_balanced(db) == {}
    with pytest.raises(ledger.LedgerError, match="is reversed"):
        ledger.transition(db, g.id, "approve", at=T0, actor="x")


def test_entries_and_rewards_are_immutable(db):
    g = _grant()
    ledger.grant(db, g, actor="test")
    for change in (
        lambda: db["referral_entries"].update({}, {"state": "approved"}),
        lambda: db["referral_lines"].update({}, add={"amount_minor": 1}),
        lambda: db["referral_rewards"].update({}, {"amount_minor": 1}),
        lambda: db["referral_lines"].delete({}),
    ):
        with pytest.raises(StoreError, match="append-only"):
            change()


def test_an_unbalanced_or_float_entry_is_refused(db):
    g = _grant()
    ledger.grant(db, g, actor="test")
    with pytest.raises(ledger.LedgerError, match="balance"):
        ledger.post(
            db, key="k", reward=g.id, kind="approve", state="approved", at=T0, actor="x",
            reason=None, lines=[("a", None, 10, "USD"), ("b", None, -9, "USD")],
        )  # fmt: skip
    with pytest.raises(ledger.LedgerError, match="integers"):
        ledger.post(
            db, key="k", reward=g.id, kind="approve", state="approved", at=T0, actor="x",
            reason=None, lines=[("a", None, 0.5, "USD"), ("b", None, -0.5, "USD")],
        )  # fmt: skip


def test_a_held_reward_waits_for_a_reviewer(db):
    g = _grant(held_reasons=["burst: 6 signups"])
    ledger.grant(db, g, actor="test")
    row = ledger.get_reward(db, g.id)
    assert row["approve_after"] is None and row["held_reasons"] == ["burst: 6 signups"]
    with pytest.raises(ledger.LedgerError, match="held for review"):
        ledger.transition(db, g.id, "approve", at=T0, actor="auto-approval")
    ledger.transition(db, g.id, "approve", at=T0, actor="review by ann", review=True)
    assert ledger.get_reward(db, g.id)["state"] == "approved"
    h = _grant(referred="c3", held_reasons=["self-referral"])
    ledger.grant(db, h, actor="test")
    ledger.transition(db, h.id, "reject", at=T0, actor="review by ann", reason="same person")
    assert ledger.balances(db, "c1") == {"USD": {"pending": 0, "available": 5000}}


def test_each_transition_happens_once_even_if_asked_twice(db):
    g = _grant()
    ledger.grant(db, g, actor="test")
    ledger.transition(db, g.id, "approve", at=T0, actor="a")
    with pytest.raises(ledger.LedgerError):
        ledger.transition(db, g.id, "approve", at=T0, actor="a")
    with pytest.raises(StoreError):  # the unique key backs the state machine
        ledger.post(
            db, key=f"{g.id}/approve", reward=g.id, kind="approve", state="approved", at=T0,
            actor="x", reason=None, lines=[],
        )  # fmt: skip


# -- attribution -------------------------------------------------------------------------------


def _event(type_, properties, contact_id="c2", at="2026-05-01T10:00:00Z", id="e1") -> Event:
    return Event(id=id, contact_id=contact_id, type=type_, occurred_at=at, properties=properties)


def test_first_attribution_by_event_time_wins(db):
    c2 = Contact(id="c2")
    attribution.on_referral_signup(db, c2, _event("referral.signup", {"referrer_id": "c7"}))
    later = _event("referral.signup", {"referrer_id": "c8"}, at="2026-05-02T10:00:00Z", id="e2")
    attribution.on_referral_signup(db, c2, later)
    assert attribution.attribution_of(db, "c2")["referrer_contact_id"] == "c7"
    earlier = _event("referral.signup", {"referrer_id": "c9"}, at="2026-04-30T10:00:00Z", id="e3")
    attribution.on_referral_signup(db, c2, earlier)
    assert attribution.attribution_of(db, "c2")["referrer_contact_id"] == "c9"
    # Once a reward went out, a late attribution changes nothing.
    ledger.grant(db, _grant(referred="c2", referrer="c9"), actor="test")
    earliest = _event("referral.signup", {"referrer_id": "c5"}, at="2026-04-01T10:00:00Z", id="e4")
    attribution.on_referral_signup(db, c2, earliest)
    assert attribution.attribution_of(db, "c2")["referrer_contact_id"] == "c9"


def test_attribution_by_code(db):
    code, _ = attribution.ensure_code(db, "c1", at=T0)
    c2 = Contact(id="c2")
    attribution.on_referral_signup(
        db, c2, _event("referral.signup", {"code": display_code(code).lower()})
    )
    row = attribution.attribution_of(db, "c2")
    assert (row["referrer_contact_id"], row["code"], row["event_id"]) == ("c1", code, "e1")
    with pytest.raises(ValueError, match="not known"):
        attribution.on_referral_signup(
            db, Contact(id="c3"), _event("referral.signup", {"code": "NOPE"})
        )
    with pytest.raises(ValueError, match="belongs to 'c1'"):
        attribution.on_referral_signup(
            db, Contact(id="c4"), _event("referral.signup", {"code": code, "referrer_id": "c9"})
        )
    with pytest.raises(ValueError, match="cannot refer themselves"):
        attribution.on_referral_signup(
            db, Contact(id="c1"), _event("referral.signup", {"code": code})
        )
    # A signup carrying a code; an unknown code does not stop a signup.
    attribution.on_signup(db, Contact(id="c5"), _event("signup", {"referral_code": code}))
    attribution.on_signup(db, Contact(id="c6"), _event("signup", {"referral_code": "ZZZ"}))
    assert attribution.attribution_of(db, "c5")["referrer_contact_id"] == "c1"
    assert attribution.attribution_of(db, "c6") is None


# -- fraud checks --------------------------------------------------------------------------------


def _claim(**overrides) -> Claim:
    values = dict(
        referrer_id="c1",
        referred_id="c2",
        role="referrer",
        kind="onboarding",
        amount_minor=5000,
        currency="USD",
        at=datetime(2026, 5, 20, tzinfo=UTC),
        referrer_email="ada.lovelace@gmail.com",
        referred_email="bob@example.org",
        attributed_at="2026-05-10T10:00:00.000000Z",
        settings=FraudSettings(),
    )
    values.update(overrides)
    return Claim(**values)


def referral_registry(**others):
    """The engine's plugins: clm-referral and ``others`` (plugins of the plugin)."""
    import clm_referral

    return Registry({"referral": clm_referral, **others}, installed=False)


def test_builtin_checks_are_registered_through_the_hook():
    assert list(get_fraud_checks(referral_registry())) == [
        "self-referral",
        "shared-fingerprint",
        "monthly-cap",
        "burst",
    ]


def test_self_referral(db):
    assert checks.self_referral(_claim(), db) is None
    assert "same contact" in checks.self_referral(_claim(referred_id="c1"), db)
    same = _claim(referred_email="Ada.Lovelace@gmail.com")
    assert "share the email" in checks.self_referral(same, db)
    plus = _claim(referred_email="adalovelace+2@googlemail.com")
    assert "one mailbox" in checks.self_referral(plus, db)
    assert run_checks(plus, db, referral_registry())[0].startswith("self-referral: ")


def test_shared_fingerprints(db):
    for contact, value in (("c1", "dev-1"), ("c2", "dev-1"), ("c3", "dev-3")):
        event = _event("page.viewed", {"device_fingerprint": value}, contact_id=contact)
        attribution.on_any_event(db, Contact(id=contact), event)
    assert "device fingerprint" in checks.shared_fingerprint(_claim(), db)[0]
    assert checks.shared_fingerprint(_claim(referred_id="c3"), db) == []
    card = _event("purchase", {"amount": 5, "payment_fingerprint": "card-9"}, contact_id="c3")
    attribution.on_any_event(db, Contact(id="c3"), card)
    attribution.on_any_event(db, Contact(id="c1"), card.model_copy(update={"contact_id": "c1"}))
    [reason] = checks.shared_fingerprint(_claim(referred_id="c3"), db)
    assert "payment fingerprint (card-9)" in reason


def test_monthly_cap(db):
    for n in range(3):
        ledger.grant(
            db, _grant(referred=f"r{n}", earned_at=f"2026-05-0{n + 1}T10:00:00.000000Z"), actor="t"
        )
    ledger.grant(db, _grant(referred="r9", earned_at="2026-04-30T10:00:00.000000Z"), actor="t")
    assert checks.monthly_cap(_claim(settings=FraudSettings(monthly_cap=4)), db) is None
    reason = checks.monthly_cap(_claim(settings=FraudSettings(monthly_cap=3)), db)
    assert "3 rewards in 2026-05 (cap 3" in reason


def test_burst(db):
    for n in range(5):
        attribution.attribute(
            db, referred=f"r{n}", referrer="c1", code=None,
            at=f"2026-05-10T1{n}:00:00.000000Z", event_id=None,
        )  # fmt: skip
    claim = _claim(attributed_at="2026-05-10T12:00:00.000000Z")
    assert "5 referred signups" in checks.burst(claim, db)
    assert checks.burst(_claim(settings=FraudSettings(burst_count=6)), db) is None
    far = _claim(attributed_at="2026-06-10T12:00:00.000000Z")
    assert checks.burst(far, db) is None


# -- facts and the report -------------------------------------------------------------------------


def test_facts_and_report_from_the_tables(db):
    for n, referred in enumerate(("c2", "c3", "c4")):
        attribution.attribute(
            db, referred=referred, referrer="c1", code=None,
            at=f"2026-05-0{n + 1}T10:00:00.000000Z", event_id=None,
        )  # fmt: skip
    ok, held, gone = _grant("c2"), _grant("c3", held_reasons=["burst"]), _grant("c4")
    for g in (ok, held, gone):
        ledger.grant(db, g, actor="t")
    ledger.transition(db, ok.id, "approve", at=T0, actor="a")
    ledger.transition(db, gone.id, "reverse", at=T0, actor="a", reason="refund")
    assert referral_count(db, "c1") == 3
    assert successful_count(db, "c1") == 1
    assert balance(db, "c1") == 5000
    assert balance(db, "c1", part="pending") == 5000
    assert balance(db, "c1", "USD", "total") == 10000
    assert balance(db, "c9") == 0
    data = report(db, contacts=10)
    assert data["referral_rate"] == 0.3
    assert data["rewards"]["approved"]["count"] == 1
    assert data["rewards"]["held"]["amount"] == ["50.00 USD"]
    assert data["top_referrers"][0] == {
        "contact": "c1",
        "referred": 3,
        "successful": 1,
        "earned": ["50.00 USD"],
    }
    text = format_report(data)
    assert "rewards granted: 3 (150.00 USD); now:" in text
    assert "  held for review:        1 (50.00 USD)" in text
    assert "  reversed (clawed back): 1 (50.00 USD)" in text
    assert "  c3: 50.00 USD to c1\n      burst" in text


def test_every_table_is_declared(db):
    assert set(db.names) >= TABLE_NAMES


class _PostcodeChecks:
    """A third party's checks, registered through the plugin's own hook."""

    @hookimpl(optionalhook=True)
    def register_fraud_checks(self, register):
        register("same-postcode", lambda claim, db: "both live at 75011")
        register("flaky", self.flaky)

    @staticmethod
    def flaky(claim, db):
        raise RuntimeError("service down")


def test_a_plugin_of_the_plugin_adds_checks_and_a_failing_check_holds(db):
    """Checks belong to the engine whose plugins register them: another engine in the same
    process, without the third party's plugin, runs the built-ins alone."""
    registry = referral_registry(postcodes=_PostcodeChecks())
    assert list(get_fraud_checks(registry))[:1] == ["self-referral"]  # built-ins first
    assert list(get_fraud_checks(registry))[-2:] == ["same-postcode", "flaky"]
    assert run_checks(_claim(), db, registry) == [
        "same-postcode: both live at 75011",
        "flaky: the check failed (RuntimeError: service down)",
    ]
    with pytest.raises(ValueError, match="registered by both"):
        get_fraud_checks(referral_registry(postcodes=_PostcodeChecks(), clash=_Clash()))
    assert run_checks(_claim(), db, referral_registry()) == []


class _Clash:
    @hookimpl(optionalhook=True)
    def register_fraud_checks(self, register):
        register("burst", lambda claim, db: None)


@settings(max_examples=60, deadline=None)
@given(
    amounts=st.lists(st.integers(min_value=1, max_value=10**9), min_size=1, max_size=4),
    steps=st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(["approve", "reject", "reverse", "redeem"])),
        max_size=20,
    ),
)
def test_any_sequence_of_operations_keeps_the_books_balanced(amounts, steps):
    """Whatever is tried in whatever order: each entry balances, refused transitions write
    nothing, and the balances derived from the lines equal those implied by the states."""
    with declared_tables(TABLES) as db:
        _operations_keep_the_books_balanced(db, amounts, steps)


def _operations_keep_the_books_balanced(db, amounts, steps):
    grants = [_grant(referred=f"r{n}", amount=a) for n, a in enumerate(amounts)]
    for g in grants:
        ledger.grant(db, g, actor="t")
    states = {g.id: "pending" for g in grants}
    debt = set()
    for index, kind in steps:
        g = grants[index % len(grants)]
        before = states[g.id]
        allowed = before in ledger.TRANSITIONS[kind][0]
        try:
            ledger.transition(db, g.id, kind, at=T0, actor="t", review=True)
        except ledger.LedgerError:
            assert not allowed, (before, kind)
            continue
        assert allowed, (before, kind)
        states[g.id] = ledger.TRANSITIONS[kind][1]
        if kind == "reverse" and before == "redeemed":
            debt.add(g.id)
    assert ledger.check_balanced(db) == {}
    pending = sum(g.amount_minor for g in grants if states[g.id] == "pending")
    available = sum(g.amount_minor for g in grants if states[g.id] == "approved")
    available -= sum(g.amount_minor for g in grants if g.id in debt)
    assert ledger.balances(db, "c1") == {"USD": {"pending": pending, "available": available}}
    assert {r["id"]: r["state"] for r in ledger.rewards(db)} == states
