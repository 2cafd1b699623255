"""The warranty plugin end to end: events in, anchors on products, offers out, conversion.

Real engine, real SQLite file, virtual clock: what a user would check with `clm warranty`.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from clm_warranty import reports
from clm_warranty.cli import warranty
from clm_warranty.demo import summary
from pydantic import BaseModel, ConfigDict

from clm_engine import Engine, RulesetError, VirtualClock, hookimpl
from clm_engine.testing import check_rejected
from clm_engine.testing import make_event as event

NAME = "warranty"
ROOT = Path(__file__).resolve().parents[3]
#: The example ruleset and catalogue ship with the other examples.
EXAMPLES = ROOT / "rulesets"
START = datetime(2026, 1, 1, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_ruleset(folder: Path, name: str, rules: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    body = {"ruleset": name, "version": 1, "rules": rules}
    (folder / f"{name}.json").write_text(json.dumps(body, indent=2))


def examples(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("warranty-offers.json", "warranty-catalogue.json"):
        shutil.copy(EXAMPLES / name, folder / name)
    return folder


@pytest.fixture
def plugin(monkeypatch):
    monkeypatch.setenv("CLM_LOAD_PLUGINS", NAME)
    yield


@pytest.fixture
def clock():
    return VirtualClock(START)


def signup(engine: Engine, contact: str = "c1", consent: bool = True) -> None:
    props = {"email": f"{contact}@example.com", "consent": {"email": consent}}
    engine.ingest(event("signup", props, contact_id=contact, at=iso(START)))


def register(engine: Engine, product: str, sku: str, bought: str, contact: str = "c1", **props):
    properties = {"product_id": product, "sku": sku, "purchased_at": bought, **props}
    moment = max(engine.clock.now(), at(bought))
    engine.ingest(event("product.registered", properties, contact_id=contact, at=iso(moment)))


def happen(engine: Engine, type_: str, product: str, contact: str = "c1", **props) -> None:
    properties = {"product_id": product, **props}
    engine.ingest(event(type_, properties, contact_id=contact, at=iso(engine.clock.now())))


def go(engine: Engine, when: datetime) -> None:
    engine.clock.set(when)
    engine.tick()


def offers(engine: Engine) -> list[dict[str, Any]]:
    return engine.store.tables["warranty_offers"].rows(
        columns=[
            "kind",
            "product_id",
            "sku",
            "price_minor",
            "currency",
            "offered_at",
            "expires_at",
            "sent",
            "status",
        ],
        order_by=["offered_at"],
    )


# -- anchors on products: once per product, moved by an extension, cancelled by a return ------


def test_a_30_day_reminder_fires_once_per_product_moves_and_is_cancelled(
    plugin, clock, tmp_path, new_store
):
    rules = tmp_path / "rules"
    write_ruleset(
        rules,
        "reminders",
        [
            {
                "id": "r30",
                "when": {"before": "product.warranty_ends_at", "days": 30},
                "then": [{"action": "tag.add", "with": {"tag": "warranty-ending"}}],
            }
        ],
    )
    with Engine(new_store("x.db"), clock=clock, rulesets=[rules]) as engine:
        signup(engine)
        register(engine, "p1", "KET-1", "2026-01-01", warranty_months=12)
        register(engine, "p2", "KET-1", "2026-01-01", warranty_months=12)
        register(engine, "p3", "KET-1", "2026-01-01", warranty_months=12)

        def anchors() -> dict[str, tuple[str, str]]:
            rows = engine.store.anchors_of("c1", "reminders", "r30")
            return {entity: (fire_at[:10], status) for entity, _, fire_at, status, _ in rows}

        assert anchors() == {p: ("2026-12-02", "pending") for p in ("p1", "p2", "p3")}
        clock.set(at("2026-06-01"))
        happen(engine, "warranty.extended", "p2", months=12)
        happen(engine, "product.returned", "p3")
        assert anchors() == {"p1": ("2026-12-02", "pending"), "p2": ("2027-12-02", "pending")}
        upcoming = reports.upcoming(engine, at("2026-11-10"), 30)
        assert [(r["product_id"], r["rule"]) for r in upcoming] == [("p1", "r30")]

        go(engine, at("2026-12-02T00:00:01"))
        go(engine, at("2026-12-20"))
        assert anchors() == {"p1": ("2026-12-02", "fired"), "p2": ("2027-12-02", "pending")}
        go(engine, at("2027-12-03"))
        assert anchors() == {"p1": ("2026-12-02", "fired"), "p2": ("2027-12-02", "fired")}
        fired = [row for row in engine.store.actions_for("c1") if row.rule == "r30"]
        assert sorted(row.key.split("anchor:")[1][:2] for row in fired) == ["p1", "p2"]


# -- the example rules -------------------------------------------------------------------------


def test_the_example_offers_from_purchase_to_end_of_life(plugin, clock, tmp_path, new_store):
    db = new_store("x.db")
    with Engine(db, clock=clock, rulesets=[examples(tmp_path / "r")]) as engine:
        signup(engine)
        # An outdoor camera: 249.00, 24 months; extensions (39.00) and agreements (49.00) sold.
        register(engine, "cam", "AUR-CAM-OUT", "2026-01-10", price=249.0, warranty_months=24)
        # A hub bought long ago: near the end of its 72-month life, so an upgrade is due now.
        register(engine, "hub", "AUR-HUB-2", "2020-03-01", price=129.0)
        # A sensor, returned: nothing is ever offered for it.
        register(engine, "sensor", "AUR-SENSOR-4", "2026-01-10", price=59.0)
        happen(engine, "product.returned", "sensor")

        go(engine, at("2026-01-02"))  # the hub's upgrade anchor was already due
        go(engine, at("2026-02-10"))  # 30 days after the camera's purchase
        assert [
            (o["kind"], o["product_id"], o["sku"], o["price_minor"]) for o in offers(engine)
        ] == [
            ("upgrade", "hub", "AUR-HUB-3", 12665),  # 149.00 less 15%
            ("service_agreement", "cam", "AUR-CAM-OUT", 4900),
        ]
        clock.set(at("2026-02-20"))
        happen(engine, "service_agreement.purchased", "cam", months=12)
        register(engine, "hub3", "AUR-HUB-3", "2026-02-20", price=149.0)
        go(engine, at("2026-07-12"))  # six months in: the second agreement offer does not match

        go(engine, at("2027-11-11"))  # 60 days before the warranty ends (2028-01-10)
        go(engine, at("2027-12-11"))  # 30 days before: the same offer, re-sent
        extension = [o for o in offers(engine) if o["kind"] == "extension"]
        assert [(o["price_minor"], o["expires_at"][:10], o["sent"]) for o in extension] == [
            (3900, "2028-01-10", 2)
        ]
        clock.set(at("2027-12-20"))
        happen(engine, "warranty.extended", "cam", months=12)
        go(engine, at("2028-01-04"))  # the 7-day reminder moved a year on
        go(engine, at("2029-01-04"))  # and once there, it does not match: extended
        anchors = engine.store.anchors_of("c1", "warranty-offers", "extension-7d")
        assert {row[0]: row[2:] for row in anchors}["cam"] == (
            "2029-01-03T00:00:00.000000Z",
            "fired",
            "conditions did not match",
        )

        assert [(o["kind"], o["product_id"], o["status"]) for o in offers(engine)] == [
            ("upgrade", "hub", "accepted"),
            ("service_agreement", "cam", "accepted"),
            ("extension", "cam", "accepted"),
            ("extension", "hub3", "open"),  # the new hub's warranty ends 2028-02-20: no taker
        ]
        report = reports.offers(engine.store.tables, clock.now())
        assert {
            k: (v["made"], v["accepted"], v["expired"]) for k, v in report["by_kind"].items()
        } == {
            "extension": (2, 1, 1),
            "service_agreement": (1, 1, 0),
            "upgrade": (1, 1, 0),
        }
        assert report["by_kind"]["extension"]["accepted_minor"] == {"USD": 3900}
        assert report["by_kind"]["extension"]["reminders"] == 3  # cam's two, hub3's one
    text = summary(str(db))
    assert "extension" in text and "4 offers made, 3 accepted (75.0%)" in text


def test_no_consent_no_offer_and_a_return_withdraws_open_offers(plugin, clock, tmp_path, new_store):
    with Engine(new_store("x.db"), clock=clock, rulesets=[examples(tmp_path / "r")]) as engine:
        signup(engine, "c1")
        signup(engine, "c2", consent=False)
        register(engine, "a", "AUR-LOCK", "2026-01-01", price=279.0)
        register(engine, "b", "AUR-LOCK", "2026-01-01", contact="c2", price=279.0)
        go(engine, at("2026-02-01"))
        assert [(o["product_id"], o["status"]) for o in offers(engine)] == [("a", "open")]
        happen(engine, "product.returned", "a")
        assert [o["status"] for o in offers(engine)] == ["withdrawn"]
        go(engine, at("2026-07-03"))  # the six-month offer: the product is gone
        assert len(offers(engine)) == 1


# -- handing the message to the email plugin ---------------------------------------------------


class SendParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: str
    category: str | None = None
    reply_to: str | None = None
    data: dict[str, Any] = {}


class FakeEmail:
    """An ``email.send`` of the shape the email plugin's will have: records what it got."""

    sent: list[dict[str, Any]] = []

    @hookimpl
    def register_actions(self, register):
        def send(ctx, params):
            FakeEmail.sent.append(params.model_dump())
            return {"message": ctx.key}

        register("email.send", send, SendParams, external=True)


def test_offers_hand_their_message_to_email_send_when_it_is_installed(plugin, clock, tmp_path):
    FakeEmail.sent = []
    rules = examples(tmp_path / "r")
    with Engine(
        tmp_path / "x.db", clock=clock, rulesets=[rules], plugins={"fake-email": FakeEmail()}
    ) as engine:
        signup(engine)
        register(engine, "cam", "AUR-CAM-OUT", "2026-01-10", price=249.0)
        go(engine, at("2026-02-10"))
        go(engine, at("2026-02-10T00:01:00"))
    assert len(FakeEmail.sent) == 1
    message = FakeEmail.sent[0]
    assert (message["template"], message["category"]) == ("warranty-service-agreement", "marketing")
    data = message["data"]
    assert (data["offer_kind"], data["product_id"], data["price"], data["currency"]) == (
        "service_agreement",
        "cam",
        "49.00",
        "USD",
    )
    assert data["expires_on"] == "2026-03-12"


def test_without_email_the_offer_is_still_recorded_and_says_why(plugin, clock, tmp_path, new_store):
    with Engine(new_store("x.db"), clock=clock, rulesets=[examples(tmp_path / "r")]) as engine:
        signup(engine)
        register(engine, "cam", "AUR-CAM-OUT", "2026-01-10", price=249.0)
        go(engine, at("2026-02-10"))
        assert len(offers(engine)) == 1
        (offered,) = [e for e in engine.store.recent_events("c1") if e.type == "warranty.offered"]
        assert (offered.properties["kind"], offered.properties["price_minor"]) == (
            "service_agreement",
            4900,
        )
        (row,) = [r for r in engine.store.actions_for("c1") if r.action.startswith("warranty.")]
        assert row.status == "done"
        assert row.result["email"].startswith("not sent: no email.send action")


# -- validation --------------------------------------------------------------------------------


def test_offer_rules_need_a_catalogue(plugin, clock, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(EXAMPLES / "warranty-offers.json", rules)
    with pytest.raises(RulesetError, match="need a product catalogue"):
        Engine(tmp_path / "x.db", clock=clock, rulesets=[rules])


def test_a_bad_extension_is_a_recorded_failure(plugin, clock, tmp_path, new_store):
    with Engine(new_store("x.db"), clock=clock) as engine:
        register(engine, "p1", "AUR-LOCK", "2026-01-01")
        bad = event("warranty.extended", {"product_id": "p9", "months": 12}, id="ext-1")
        check_rejected(engine, bad, match="not registered", reducer="warranty.extended")


# -- the command line --------------------------------------------------------------------------


def test_the_cli_shows_products_upcoming_fires_and_offers(plugin, clock, tmp_path):
    db = tmp_path / "x.db"
    rules = examples(tmp_path / "r")
    with Engine(db, clock=clock, rulesets=[rules]) as engine:
        signup(engine)
        register(engine, "cam", "AUR-CAM-OUT", "2026-01-10", price=249.0)
        register(engine, "hub", "AUR-HUB-2", "2026-01-05")  # months from the catalogue
        go(engine, at("2026-02-10"))
    runner = CliRunner()

    def run(*args: str) -> Any:
        result = runner.invoke(warranty, [*args, "--db", str(db), "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    shown = run("products", "c1", "--rulesets", str(rules), "--at", "2026-02-11")["products"]
    assert [(p["product_id"], p["warranty_ends_at"][:10]) for p in shown] == [
        ("hub", "2028-01-05"),
        ("cam", "2028-01-10"),
    ]
    assert shown[1]["offers"][0]["kind"] == "service_agreement"
    soon = run("upcoming", "--days", "200", "--at", "2026-02-11")["upcoming"]
    assert [(r["rule"], r["product_id"]) for r in soon] == [  # pending, whatever the "if"
        ("service-agreement-six-months", "hub"),
        ("service-agreement-six-months", "cam"),
    ]
    report = run("offers", "--at", "2026-02-11")
    assert report["by_kind"]["service_agreement"]["made"] == 1
    assert run("offers", "--since", "2026-03-01")["made"] == 0
    people = runner.invoke(warranty, ["offers", "--db", str(db), "--at", "2026-04-01"])
    assert "service agreement" in people.output and "1 offers made, 0 accepted" in people.output


def test_the_examples_are_valid_with_the_other_examples(monkeypatch):
    from clm_engine.rulesets.loading import validate_all

    monkeypatch.setenv(
        "CLM_LOAD_PLUGINS", "warranty,email,referral,sms,loyalty,webhook"
    )  # the other examples'
    validated = validate_all([EXAMPLES])
    assert [str(p) for p in validated.problems] == []
    assert {d.name for d in validated.documents if d.kind == "catalogue"} == {"aurora"}


def test_catalogue_mistakes_are_reported_where_they_are(plugin, tmp_path):
    from clm_engine.rulesets.loading import validate_all

    catalogue = json.loads((EXAMPLES / "warranty-catalogue.json").read_text())
    catalogue["products"]["AUR-LOCK"]["successor"] = "AUR-LOCK-9"
    catalogue["products"]["AUR-HUB-2"]["extension"]["price_minor"] = 19.5
    (tmp_path / "catalogue.json").write_text(json.dumps(catalogue, indent=2))
    problems = [str(p) for p in validate_all([tmp_path]).problems]
    assert any("/products/AUR-HUB-2/extension/price_minor" in p for p in problems), problems
    (tmp_path / "catalogue.json").write_text(
        json.dumps(
            {
                **catalogue,
                "products": {
                    **catalogue["products"],
                    "AUR-HUB-2": {
                        **catalogue["products"]["AUR-HUB-2"],
                        "extension": {"months": 12, "price_minor": 1900},
                    },
                },
            },
            indent=2,
        )
    )
    (problem,) = validate_all([tmp_path]).problems
    assert "/products/AUR-LOCK/successor" in str(problem)
    assert "successor 'AUR-LOCK-9' is in no catalogue" in str(problem)
    assert str(problem).startswith(f"{tmp_path / 'catalogue.json'}:")


def test_an_event_rule_offers_for_the_events_product(plugin, clock, tmp_path, new_store):
    rules = tmp_path / "rules"
    write_ruleset(
        rules,
        "at-registration",
        [
            {
                "id": "agreement-now",
                "when": {"event": "product.registered"},
                "if": {"fact": "product.price_minor", "op": "gte", "value": 20000},
                "then": [{"action": "warranty.offer_service_agreement"}],
                "limit": {"once_per": "event.properties.product_id"},
            }
        ],
    )
    shutil.copy(EXAMPLES / "warranty-catalogue.json", rules)
    with Engine(new_store("x.db"), clock=clock, rulesets=[rules]) as engine:
        register(engine, "lock", "AUR-LOCK", "2026-01-01", price=279.0)
        register(engine, "hub", "AUR-HUB-2", "2026-01-01", price=129.0)
        engine.dispatch()
        assert [(o["product_id"], o["price_minor"]) for o in offers(engine)] == [("lock", 5900)]


def test_clm_warranty_is_a_command_of_clm_with_one_line_errors(plugin, tmp_path):
    import os
    import subprocess
    import sys

    clm = Path(sys.executable).parent / "clm"
    env = {**os.environ, "CLM_LOAD_PLUGINS": NAME}
    db = tmp_path / "x.db"
    with Engine(db) as engine:  # a store with the plugin's tables, and no contact
        assert "warranty_offers" in engine.store.tables
    done = subprocess.run(
        [str(clm), "warranty", "products", "nobody", "--db", str(db)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stderr) == (1, f"Error: no contact 'nobody' in {db}\n")
    done = subprocess.run(
        [str(clm), "warranty", "upcoming", "--days", "30", "--db", str(db)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "nothing fires on products in the next 30 days\n"


def test_rules_loaded_later_anchor_on_products_already_registered(
    plugin, clock, tmp_path, new_store
):
    with Engine(new_store("x.db"), clock=clock) as engine:
        signup(engine)
        register(engine, "cam", "AUR-CAM-OUT", "2026-01-10", price=249.0)
        engine.load_rulesets([examples(tmp_path / "r")])
        anchors = engine.store.anchors_of("c1", "warranty-offers", "extension-60d")
        assert [(entity, fire_at[:10]) for entity, _, fire_at, *_ in anchors] == [
            ("cam", "2027-11-11")
        ]


def test_a_product_of_another_contact_is_refused_and_nothing_changes(
    plugin, clock, tmp_path, new_store
):
    with Engine(new_store("x.db"), clock=clock) as engine:
        register(engine, "p1", "AUR-LOCK", "2026-01-01")
        register(engine, "p2", "AUR-LOCK", "2026-01-01", contact="c2")
        theirs = event("product.registered", {"product_id": "p1"}, contact_id="c2", id="reg-x")
        check_rejected(engine, theirs, match="another contact", reducer="warranty.registered")
        assert engine.contact("c2").metrics["product_ids"] == ["p2"]
        owners = {
            r["product_id"]: r["contact_id"]
            for r in engine.store.tables["warranty_products"].rows()
        }
        assert owners == {"p1": "c1", "p2": "c2"}
