"""The API plugins with their own tables build on: event handlers, facts and actions reading
and writing through the transaction, follow-ups, events for other contacts, external actions
outside the write lock, documents beside the rulesets, and what dispatch policies are told."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from clm_engine import Engine, RulesetError
from clm_engine.dispatch import Dispatcher, DispatchReport
from clm_engine.registry import Registry
from clm_engine.rulesets import validate_all
from tests.helpers import event
from tests.plugins import credits_plugin

GOLD = {"tier": "gold", "amount": 50}
#: The plugin every engine of these tests has.
CREDITS = {"credits": credits_plugin}


@pytest.fixture(autouse=True)
def credits():
    credits_plugin.OUTSIDE.clear()
    credits_plugin.POLICY_SAW.clear()
    credits_plugin.BEHAVIOUR.update(fail=None, db_path=None, lock_free=None)
    credits_plugin.CALLS.update(handler=0, grant=0)
    yield credits_plugin


def write_rules(tmp_path, *rules, tiers=(GOLD,)):
    folder = tmp_path / "rules"
    folder.mkdir(exist_ok=True)
    for tier in tiers:
        (folder / f"tier-{tier['tier']}.json").write_text(json.dumps(tier, indent=2))
    ruleset = {"ruleset": "credits", "version": 1, "rules": list(rules)}
    (folder / "credits.json").write_text(json.dumps(ruleset, indent=2))
    return folder


GRANT_ON_PURCHASE = {
    "id": "grant",
    "when": {"event": "deal.won"},
    "then": [{"action": "credits.grant", "with": {"tier": "gold"}}],
}


def test_facts_read_the_plugins_tables_through_the_context(tmp_path, clock):
    rule = {
        "id": "advocate",
        "when": {"event": "nps.answered"},
        "if": {"fact": "credits.invited", "op": "gte", "value": 2},
        "then": [{"action": "tag.add", "with": {"tag": "advocate"}}],
    }
    folder = write_rules(tmp_path, rule)
    with Engine(tmp_path / "clm.db", clock=clock, rulesets=[folder], plugins=CREDITS) as engine:
        engine.ingest(event("bob", "invite.accepted", "2026-10-01", inviter="ann"))
        engine.ingest(event("ann", "nps.answered", "2026-10-02", score=9))
        engine.ingest(event("cat", "invite.accepted", "2026-10-03", inviter="ann"))
        engine.ingest(event("ann", "nps.answered", "2026-10-04", score=9))
        engine.dispatch()
        decisions = [t.decision for t in engine.store.traces("ann", rule="advocate")]
        assert decisions == ["fired"]  # the first answer came with one invite only
        assert "advocate" in engine.contact("ann").tags


def test_a_rule_condition_reads_what_actions_wrote_to_a_plugin_table(tmp_path, clock):
    rule = {
        "id": "big-spender",
        "when": {"event": "deal.won"},
        "if": {"fact": "credits.granted_total", "op": "gte", "value": 100},
        "then": [{"action": "tag.add", "with": {"tag": "vip"}}],
    }
    folder = write_rules(tmp_path, GRANT_ON_PURCHASE, rule)
    with Engine(tmp_path / "clm.db", clock=clock, rulesets=[folder], plugins=CREDITS) as engine:
        assert engine.ingest(event("c1", "deal.won", "2026-11-01")).ran_inline == 1  # 50
        engine.ingest(event("c1", "deal.won", "2026-11-01T11:00:00Z"))
        # 100 granted now; but the event's rules are all judged on the state it met (50).
        assert "vip" not in engine.contact("c1").tags
        engine.ingest(event("c1", "deal.won", "2026-11-01T12:00:00Z"))
        assert "vip" in engine.contact("c1").tags


def test_the_events_own_rules_see_what_its_handler_wrote(tmp_path, clock):
    rule = {
        "id": "welcome-invitee",
        "when": {"event": "invite.accepted"},
        "if": {"fact": "credits.invited_by", "op": "eq", "value": "ann"},
        "then": [{"action": "tag.add", "with": {"tag": "invited-by-ann"}}],
    }
    folder = write_rules(tmp_path, rule)
    with Engine(tmp_path / "clm.db", clock=clock, rulesets=[folder], plugins=CREDITS) as engine:
        assert engine.ingest(event("bob", "invite.accepted", "2026-10-01", inviter="ann")).enqueued
        engine.dispatch()
        assert "invited-by-ann" in engine.contact("bob").tags


def test_an_internal_actions_writes_commit_with_it_and_roll_back_with_a_failure(tmp_path, clock):
    grant = {"action": "credits.grant", "with": {"tier": "gold", "fail_first": True}}
    rule = {**GRANT_ON_PURCHASE, "then": [grant]}
    folder = write_rules(tmp_path, rule)
    with Engine(tmp_path / "clm.db", clock=clock, rulesets=[folder], plugins=CREDITS) as engine:
        engine.ingest(event("c1", "deal.won", "2026-11-02"))  # runs inline, fails once
        [row] = engine.store.actions_for("c1")
        assert (row.status, row.attempts) == ("pending", 1)
        db = engine.store.read().db
        assert db.execute("SELECT count(*) FROM credit_ledger").fetchone()[0] == 0
        clock.advance(minutes=1)
        assert engine.dispatch().outcomes == {"done": 1}
        assert db.execute("SELECT amount FROM credit_ledger").fetchall() == [(50,)]
        assert credits_plugin.CALLS["grant"] == 2
        clock.advance(days=1)
        engine.dispatch()  # nothing more: the grant is done once
        assert db.execute("SELECT count(*) FROM credit_ledger").fetchone()[0] == 1


def test_a_fold_that_restarts_takes_back_what_its_inline_actions_wrote(tmp_path, clock):
    folder = write_rules(tmp_path, GRANT_ON_PURCHASE)
    with Engine(tmp_path / "clm.db", clock=clock, rulesets=[folder], plugins=CREDITS) as engine:
        result = engine.ingest_many(
            [
                event("c1", "deal.won", "2026-11-01"),  # the grant writes the ledger inline
                event("c1", "purchase", "2026-11-02"),  # no amount: the fold restarts
            ]
        )
        assert len(result.failed) == 1 and credits_plugin.CALLS["grant"] == 2
        db = engine.store.read().db
        assert db.execute("SELECT amount FROM credit_ledger").fetchall() == [(50,)]  # once
        [row] = [r for r in engine.store.actions_for("c1") if r.action == "credits.grant"]
        assert (row.status, row.note) == ("done", None)  # the second run met a clean ledger


def test_a_failure_is_recorded_once_when_actions_emit_about_other_contacts(tmp_path, clock):
    folder = write_rules(tmp_path, GRANT_ON_PURCHASE)
    with Engine(tmp_path / "clm.db", clock=clock, rulesets=[folder], plugins=CREDITS) as engine:
        result = engine.ingest_many(
            [
                event("ann", "signup", "2026-10-01"),
                event("bob", "invite.accepted", "2026-10-02", inviter="ann"),
                event("bob", "deal.won", "2026-11-02"),  # emits credits.thanked for ann
                event("cy", "purchase", "2026-11-02"),  # no amount: its reducer fails
            ]
        )
        assert [f.event.contact_id for f in result.failed] == ["cy"]
        [failure] = engine.store.failures()
        assert failure["attempts"] == 1  # not recorded again by the pass for ann


def test_an_action_emits_for_another_contact_and_enqueues_a_follow_up_once(tmp_path, clock):
    folder = write_rules(tmp_path, GRANT_ON_PURCHASE)
    with Engine(tmp_path / "clm.db", clock=clock, rulesets=[folder], plugins=CREDITS) as engine:
        engine.ingest(event("ann", "signup", "2026-10-01"))
        engine.ingest(event("bob", "invite.accepted", "2026-10-02", inviter="ann"))
        assert engine.ingest(event("bob", "deal.won", "2026-11-02")).ran_inline == 1
        thanked = [
            e for e in engine.store.read().contact_events("ann") if e.type == "credits.thanked"
        ]
        assert [e.properties for e in thanked] == [{"for": "bob"}]
        [grant, reminder] = engine.store.actions_for("bob")
        assert grant.result == {
            "granted": 50,
            "due_at": "2026-11-02T10:00:00+00:00",  # the event's time, not the clock's
            "inviter_signed_up": "2026-10-01T10:00:00+00:00",  # ctx.contact_of("ann")
        }
        assert reminder.key == f"{grant.key}/reminder"
        assert (reminder.action, reminder.status) == ("credits.notify", "pending")
        assert reminder.due_at.startswith("2026-11-04T10:00")  # inline: at the event's time
        from clm_engine.explain import explain

        [decision] = explain(engine, "bob", rule="grant")["rules"][0]["decisions"]
        [follow_up] = decision["actions"][0]["follow_ups"]
        assert (follow_up["action"], follow_up["status"]) == ("credits.notify", "pending")
        clock.advance(days=2)
        assert engine.dispatch().outcomes == {"done": 1}
        assert [o["message"] for o in credits_plugin.OUTSIDE] == ["you got 50"]


def test_an_external_action_runs_without_the_write_lock_and_is_recorded_after(tmp_path, clock):
    db_path = tmp_path / "clm.db"
    folder = write_rules(tmp_path, GRANT_ON_PURCHASE)
    credits_plugin.BEHAVIOUR["db_path"] = str(db_path)
    with Engine(db_path, clock=clock, rulesets=[folder], plugins=CREDITS) as engine:
        engine.ingest(event("c1", "deal.won", "2026-11-02"))
        engine.dispatch()
        clock.advance(days=2)
        assert engine.dispatch().outcomes == {"done": 1}
        assert credits_plugin.BEHAVIOUR["lock_free"] is True  # another writer could write
        [sent] = credits_plugin.OUTSIDE
        assert sent["tables"] is None and sent["key"].endswith("/0/reminder")
        notified = [
            e for e in engine.store.read().contact_events("c1") if e.type == "credits.notified"
        ]
        assert len(notified) == 1
        [_, row] = engine.store.actions_for("c1")
        assert (row.status, row.attempts, row.result) == ("done", 1, {"sent": True})


def test_external_failures_retry_with_backoff_or_end_as_failed(tmp_path, clock):
    folder = write_rules(tmp_path, GRANT_ON_PURCHASE)
    with Engine(tmp_path / "clm.db", clock=clock, rulesets=[folder], plugins=CREDITS) as engine:
        engine.ingest(event("c1", "deal.won", "2026-11-02"))
        engine.dispatch()
        clock.advance(days=2)
        credits_plugin.BEHAVIOUR["fail"] = "temporary"
        assert engine.dispatch().outcomes == {"retried": 1}
        [_, row] = engine.store.actions_for("c1")
        assert "451 try again later" in row.note and row.attempts == 1
        credits_plugin.BEHAVIOUR["fail"] = "permanent"
        clock.advance(seconds=29)
        assert engine.dispatch().total == 0  # the backoff: 30 s
        clock.advance(seconds=1)
        assert engine.dispatch().outcomes == {"failed": 1}
        [_, row] = engine.store.actions_for("c1")
        assert (row.status, row.note, row.attempts) == ("failed", "550 no such user", 2)
        types = [e.type for e in engine.store.read().contact_events("c1")]
        assert "credits.undeliverable" in types  # what it emitted is applied all the same


def test_a_claimed_external_action_comes_back_when_its_lease_runs_out(tmp_path, clock):
    folder = write_rules(tmp_path, GRANT_ON_PURCHASE)
    with Engine(tmp_path / "clm.db", clock=clock, rulesets=[folder], plugins=CREDITS) as engine:
        engine.ingest(event("c1", "deal.won", "2026-11-02"))
        engine.dispatch()
        clock.advance(days=2)
        dispatcher = Dispatcher(
            registry=engine.registry,
            stages=engine.stages,
            apply_events=engine._apply_emitted,
            documents=engine.documents,
        )
        with engine.store.write() as tx:  # a worker claims it, then dies before running it
            taken, claims = dispatcher.run_batch(tx, clock.now(), 10, DispatchReport())
        assert (taken, len(claims)) == (1, 1)
        assert engine.dispatch().total == 0  # claimed: no other worker takes it
        clock.advance(engine.lease)
        assert engine.dispatch().outcomes == {"done": 1}
        [_, row] = engine.store.actions_for("c1")
        assert row.attempts == 2
        assert len(credits_plugin.OUTSIDE) == 1
        # The dead worker's claim cannot record over the row now.
        report = DispatchReport()
        dispatcher.run_claims(engine.store, claims, clock.now, report)
        assert report.outcomes == {"lost_lease": 1}


def test_an_anchor_on_a_plugin_entity_reaches_the_action_and_the_policy(tmp_path, clock):
    rule = {
        "id": "voucher-expiring",
        "when": {"before": "voucher.expires_at", "days": 3},
        "then": [{"action": "credits.notify", "with": {"message": "use it"}}],
    }
    folder = write_rules(tmp_path, rule)
    with Engine(tmp_path / "clm.db", clock=clock, rulesets=[folder], plugins=CREDITS) as engine:
        engine.ingest(
            event("c1", "voucher.issued", "2026-11-01", voucher="v-7", expires_at="2026-11-20")
        )
        clock.set(datetime(2026, 11, 17, tzinfo=UTC))
        report = engine.tick()
        assert report.anchors_fired == 1 and report.dispatched.outcomes == {"done": 1}
        [sent] = credits_plugin.OUTSIDE
        assert sent["entity"] == "v-7"
        # Asked at the claim, and again right before the send (on the contact as it is then).
        expected = {
            "action": "credits.notify",
            "entity": "v-7",
            "key": sent["key"],
            "tables": True,
            "rule": "voucher-expiring",
        }
        saw = credits_plugin.POLICY_SAW
        assert saw == [expected, expected]


def test_documents_load_with_the_rulesets_and_report_problems_like_them(tmp_path, clock):
    folder = write_rules(tmp_path, GRANT_ON_PURCHASE, tiers=(GOLD, {"tier": "tin", "amount": 0}))
    (folder / "tier-bad.json").write_text('{\n  "tier": "bad",\n  "amount": "lots"\n}\n')
    result = validate_all([folder], registry=Registry(CREDITS))
    rendered = [p.render() for p in result.problems]
    assert any("tier-bad.json:3:" in r and "/amount" in r for r in rendered), rendered
    assert any("tier-tin.json" in r and "a tier's amount must be positive" in r for r in rendered)
    assert [d.name for d in result.documents] == ["gold"]
    with pytest.raises(RulesetError, match="amount"):
        Engine(tmp_path / "clm.db", clock=clock, rulesets=[folder], plugins=CREDITS)


def test_an_action_naming_a_missing_document_is_a_problem_at_its_with(tmp_path):
    rule = {**GRANT_ON_PURCHASE, "then": [{"action": "credits.grant", "with": {"tier": "gould"}}]}
    folder = write_rules(tmp_path, rule)
    [problem] = validate_all([folder], registry=Registry(CREDITS)).problems
    assert problem.pointer == "/rules/0/then/0/with"
    assert "no tier 'gould'; known: gold" in problem.message


def test_two_documents_of_one_kind_and_name_are_a_problem(tmp_path):
    folder = write_rules(tmp_path, GRANT_ON_PURCHASE)
    (folder / "again.json").write_text(json.dumps(GOLD))
    problems = validate_all([folder], registry=Registry(CREDITS)).problems
    assert any("tier 'gold' is also defined in" in p.message for p in problems)


def test_a_handler_sees_each_new_event_once_even_when_history_is_refolded(tmp_path, clock):
    with Engine(tmp_path / "clm.db", clock=clock, plugins=CREDITS) as engine:
        engine.ingest(event("bob", "invite.accepted", "2026-10-05", inviter="ann"))
        engine.ingest(event("bob", "invite.accepted", "2026-10-05", inviter="ann"))  # same id
        engine.ingest(event("bob", "page.viewed", "2026-10-01"))  # late: re-folds bob
        assert credits_plugin.CALLS["handler"] == 1


def test_a_failing_handler_stores_nothing_of_its_event(tmp_path, clock):
    with Engine(tmp_path / "clm.db", clock=clock, plugins=CREDITS) as engine:
        result = engine.ingest_many(
            [
                event("bob", "signup", "2026-10-01"),
                event("bob", "invite.accepted", "2026-10-02", inviter=7),
                event("cat", "invite.accepted", "2026-10-02", inviter="ann"),
            ]
        )
        assert result.ingested == 2
        [failure] = result.failed
        assert failure.reducer == "credits.invite" and "needs a string 'inviter'" in failure.error
        db = engine.store.read().db
        assert db.execute("SELECT invitee FROM credit_invites").fetchall() == [("cat",)]
        assert [e.type for e in engine.store.read().contact_events("bob")] == ["signup"]
        assert engine.contact("bob").metrics["events_count"] == 1


def test_the_lock_is_really_held_by_an_internal_action(tmp_path, clock):
    """The counterpart of the external test: internal actions run in the write transaction."""
    db_path = tmp_path / "clm.db"
    seen = {}

    class Probe:
        from clm_engine import hookimpl

        @hookimpl
        def register_actions(self, register):
            from pydantic import BaseModel

            class P(BaseModel):
                pass

            def run(ctx, params):
                other = sqlite3.connect(db_path, timeout=0.1)
                try:
                    other.execute("BEGIN IMMEDIATE")
                    seen["free"] = True
                except sqlite3.OperationalError:
                    seen["free"] = False
                finally:
                    other.close()

            register("probe.run", run, P)

    rule = {"id": "probe", "when": {"event": "deal.won"}, "then": [{"action": "probe.run"}]}
    folder = write_rules(tmp_path, rule)
    with Engine(
        db_path, clock=clock, rulesets=[folder], plugins={**CREDITS, "probe": Probe()}
    ) as engine:
        engine.ingest(event("c1", "deal.won", "2026-11-02"))
        engine.dispatch()
    assert seen == {"free": False}


def test_enqueue_refuses_a_naive_time_or_a_slash(tmp_path):
    from clm_engine.models import Contact
    from clm_engine.types import ActionContext

    ctx = ActionContext(
        contact=Contact(id="c"), key="k", now=datetime.now(UTC), ruleset="r", rule="r"
    )
    with pytest.raises(ValueError, match="aware"):
        ctx.enqueue("a", {}, due_at=datetime(2026, 1, 1), occurrence="x")
    with pytest.raises(ValueError, match="without '/'"):
        ctx.enqueue("a", {}, due_at=datetime.now(UTC) + timedelta(days=1), occurrence="a/b")
