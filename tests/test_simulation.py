"""Simulation and backtests: replays on a virtual clock, in scratch stores, with real SQLite."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from clm_engine import Engine, VirtualClock, hookimpl
from clm_engine.cli import cli
from clm_engine.registry import Registry
from clm_engine.simulation import (
    EventHistory,
    SimulationError,
    compare,
    parse_step,
    parse_when,
    read_events,
    simulate,
)
from clm_engine.simulation.replay import replay
from clm_engine.synthetic import generate_events, write_jsonl
from tests.helpers import event

pytestmark = pytest.mark.usefixtures("example_plugins")  # the examples use the plugins
EXAMPLES = Path(__file__).resolve().parent.parent / "rulesets"
MAY = datetime(2026, 5, 1, tzinfo=UTC)
JUNE = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Path:
    """50 contacts over May 2026, written as JSON Lines, as `clm ingest` reads them."""
    path = tmp_path_factory.mktemp("history") / "events.jsonl"
    write_jsonl(generate_events(contacts=50, months=1, seed=3), path)
    return path


def write_ruleset(directory: Path, name: str, rules: list[dict], **extra) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps({"ruleset": name, "version": 1, "rules": rules, **extra}))
    return path


def rows(db: Path, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


# -- one simulation --------------------------------------------------------------------------


def test_counts_per_rule_match_what_the_outbox_holds(history, tmp_path):
    result = simulate(EXAMPLES, history, start=MAY, end=JUNE, keep=tmp_path / "keep")
    db = tmp_path / "keep" / "simulation.db"
    outbox = rows(db, "SELECT ruleset || '/' || rule, contact_id, status, key FROM outbox")
    actions_per_fire = {
        f"{data['ruleset']}/{rule['id']}": len(rule["then"])
        for data in (json.loads(p.read_text()) for p in EXAMPLES.glob("*.json"))
        for rule in data.get("rules", ())  # plugin documents (catalogues ...) have none
    }
    assert result.fired > 100  # the history exercises the rules
    keys = {row[3] for row in outbox}
    # What a fire enqueued; not the follow-ups its actions planned (a drip's later steps,
    # keyed under the action that planned them).
    planned = {k for k in keys if any(k.startswith(other + "/") for other in keys)}
    for rule, entry in result.per_rule.items():
        every = [row for row in outbox if row[0] == rule]
        mine = [row for row in every if row[3] not in planned]
        # A decision in an experiment's holdout arm fires and queues nothing (docs/experiments.md).
        held_out = rows(
            db,
            "SELECT count(*) FROM experiment_exposures WHERE ruleset || '/' || rule = ? "
            "AND holdout",
            rule,
        )[0][0]
        acting = entry["fired"] - held_out
        assert acting * actions_per_fire[rule] == len(mine), rule
        outcomes = sum(entry["actions"].values())  # a deferred row counts once per deferral
        if "deferred" in entry["actions"]:
            assert outcomes >= len(every), rule
        else:
            assert outcomes == len(every), rule
        held = {
            contact
            for (contact,) in rows(
                db,
                "SELECT contact_id FROM experiment_exposures WHERE ruleset || '/' || rule = ? "
                "AND holdout",
                rule,
            )
        }
        assert result.contacts_by_rule[rule] == {row[1] for row in mine} | held, rule
        assert entry["contacts"] == len(result.contacts_by_rule[rule])
        assert sum(entry["by_week"].values()) == entry["fired"]
    assert result.actions == dict(Counter(row[2] for row in outbox))
    assert sum(result.actions.values()) == len(outbox)
    assert set(result.per_rule) == set(actions_per_fire)  # rules that never fired are listed
    everything = read_events(history)
    assert result.events["replayed"] == len(everything.events)
    assert result.skipped_events == 0 and result.weeks[0] == "2026-W18"
    assert json.loads(json.dumps(result.as_dict()))["totals"]["fired"] == result.fired


def test_events_outside_the_window_are_ignored_and_counted(history):
    start, end = datetime(2026, 5, 8, tzinfo=UTC), datetime(2026, 5, 22, tzinfo=UTC)
    events = read_events(history).events
    before = sum(e.occurred_at < start for e in events)
    after = sum(e.occurred_at >= end for e in events)
    result = simulate(EXAMPLES, history, start=start, end=end)
    assert (result.events["skipped_before"], result.events["skipped_after"]) == (before, after)
    assert result.skipped_events == before + after > 0
    assert result.events["replayed"] == len(events) - before - after
    assert result.weeks == ["2026-W19", "2026-W20", "2026-W21"]
    assert result.partial_weeks == ["2026-W19", "2026-W21"]  # Friday to Friday


DELAYED = {
    "id": "thank-big-spenders",
    "when": {
        "event": "purchase",
        "where": {"fact": "event.properties.amount", "op": "gte", "value": 100},
    },
    "then": [{"action": "tag.add", "with": {"tag": "big"}, "after": {"days": 3}}],
}
TAGGED_VISIT = {
    "id": "visit-by-big-spender",
    "when": {"event": "page.viewed"},
    "if": {"fact": "contact.tags", "op": "contains", "value": "big"},
    "then": [{"action": "score.add", "with": {"score": "vip", "points": 1}}],
}


def test_a_delayed_action_runs_at_its_simulated_time_in_the_right_week(tmp_path):
    rulesets = write_ruleset(tmp_path / "rules", "orders", [DELAYED, TAGGED_VISIT])
    events = [
        event("c1", "signup", "2026-05-06"),
        event("c1", "purchase", "2026-05-08T10:00:00Z", amount=150, order_id="o1"),  # Fri, W19
        event("c1", "page.viewed", "2026-05-11T09:30:00Z", path="/"),  # before it is due
        event("c1", "page.viewed", "2026-05-11T12:00:00Z", path="/"),  # after (Mon 10:00, W20)
        event("c2", "signup", "2026-05-20"),
        event("c2", "purchase", "2026-05-29T10:00:00Z", amount=300, order_id="o2"),  # due Jun 1
    ]
    result = simulate(rulesets, events, start=MAY, end=JUNE, keep=tmp_path / "keep")
    delayed = result.per_rule["orders/thank-big-spenders"]
    assert delayed["by_week"] == {"2026-W19": 1, "2026-W22": 1}  # decided when the order came
    assert delayed["actions_by_week"] == {"2026-W20": 1}  # ran three days later, the next week
    assert delayed["actions"] == {"done": 1, "pending": 1}  # the second is due after --to
    # The tag landed at 10:00 on Monday in simulated time: the 9:30 visit did not see it, the
    # 12:00 one did; and the tag's own event is stamped with its due time.
    assert result.per_rule["orders/visit-by-big-spender"]["fired"] == 1
    db = tmp_path / "keep" / "simulation.db"
    [(occurred_at,)] = rows(db, "SELECT occurred_at FROM events WHERE type = 'clm.tag.add'")
    assert occurred_at.startswith("2026-05-11T10:00:00")
    [(finished_at,)] = rows(
        db,
        "SELECT finished_at FROM outbox WHERE status = 'done' AND rule = ?",
        "thank-big-spenders",
    )
    assert "2026-05-11T10:00:00" <= finished_at <= "2026-05-11T11:00:00"


def test_anchors_and_schedules_run_at_their_simulated_times(tmp_path):
    rules = [
        {
            "id": "one-week-in",
            "when": {"after": "contact.created_at", "days": 7},
            "then": [{"action": "tag.add", "with": {"tag": "week-old"}}],
        },
        {
            "id": "monday-digest",
            "when": {"schedule": "0 9 * * MON"},
            "then": [{"action": "score.add", "with": {"score": "digest", "points": 1}}],
        },
    ]
    rulesets = write_ruleset(tmp_path / "rules", "timed", rules)
    events = [event("c1", "signup", "2026-05-06"), event("c2", "signup", "2026-05-19")]
    result = simulate(rulesets, events, start=MAY, end=JUNE)
    anchor = result.per_rule["timed/one-week-in"]
    assert anchor["by_week"] == {"2026-W20": 1, "2026-W22": 1}  # Wed May 13, Tue May 26
    assert anchor["contacts"] == 2
    digest = result.per_rule["timed/monday-digest"]
    # Mondays at 9: c1 on May 11, 18, 25; c2 (from the 19th) on May 25.
    assert digest["by_week"] == {"2026-W20": 1, "2026-W21": 1, "2026-W22": 2}


def test_a_slot_at_the_very_start_runs_and_one_at_the_end_does_not(tmp_path):
    rules = [
        {
            "id": "monday-midnight",
            "when": {"schedule": "0 0 * * MON"},
            "then": [{"action": "tag.add", "with": {"tag": "monday"}}],
        }
    ]
    rulesets = write_ruleset(tmp_path / "rules", "edges", rules)
    events = [event("c1", "signup", "2026-04-20")]
    start, end = datetime(2026, 5, 4, tzinfo=UTC), datetime(2026, 5, 18, tzinfo=UTC)
    result = simulate(rulesets, events, start=start, end=end, db=_store_with(tmp_path, events))
    assert result.per_rule["edges/monday-midnight"]["by_week"] == {"2026-W19": 1, "2026-W20": 1}


def test_a_slot_between_two_steps_sees_the_events_before_it_and_no_later(tmp_path):
    rules = [
        {
            "id": "no-order-yet",
            "when": {"schedule": "30 8 * * MON"},
            "if": {"fact": "contact.metrics.orders_count", "op": "exists", "value": False},
            "then": [{"action": "tag.add", "with": {"tag": "no-order"}}],
        }
    ]
    rulesets = write_ruleset(tmp_path / "rules", "between", rules)
    events = [
        event("c1", "signup", "2026-05-06"),
        event("c1", "purchase", "2026-05-11T08:45:00Z", amount=5, order_id="o1"),
    ]
    result = simulate(rulesets, events, start=MAY, end=JUNE)
    # Monday May 11, 8:30: no order yet (it comes at 8:45, before the 9:00 step).
    assert result.per_rule["between/no-order-yet"]["by_week"] == {"2026-W20": 1}


def test_schedules_in_the_copied_contacts_timezones_run_at_their_slots(tmp_path):
    rules = [
        {
            "id": "monday-9-local",
            "when": {"schedule": "0 9 * * MON", "timezone": "contact"},
            "if": {"fact": "contact.metrics.orders_count", "op": "exists", "value": False},
            "then": [{"action": "tag.add", "with": {"tag": "no-order"}}],
        }
    ]
    rulesets = write_ruleset(tmp_path / "rules", "local", rules)
    real = _store_with(tmp_path, [event("c1", "signup", "2026-04-20", timezone="Asia/Kolkata")])
    events = [event("c1", "purchase", "2026-05-11T03:45:00Z", amount=5, order_id="o1")]
    start, end = datetime(2026, 5, 4, tzinfo=UTC), datetime(2026, 5, 18, tzinfo=UTC)
    result = simulate(rulesets, events, start=start, end=end, db=real)
    # 9:00 in Kolkata is 3:30 UTC: on May 11 the order (3:45 UTC) came after the slot.
    assert result.per_rule["local/monday-9-local"]["by_week"] == {"2026-W19": 1, "2026-W20": 1}


def _store_with(tmp_path: Path, events: list[dict]) -> Path:
    path = tmp_path / "real.db"
    with Engine(path, clock=VirtualClock(datetime(2026, 5, 1, tzinfo=UTC))) as engine:
        engine.ingest_many(events)
    return path


TIMED = [
    {
        "id": "two-days-in",
        "when": {"after": "contact.created_at", "days": 2, "hours": 5},
        "then": [{"action": "tag.add", "with": {"tag": "settled"}}],
    },
    {
        "id": "weekday-morning",
        "when": {"schedule": "30 8 * * MON-FRI", "timezone": "contact"},
        "if": {"fact": "contact.tags", "op": "contains", "value": "settled"},
        "then": [{"action": "score.add", "with": {"score": "mornings", "points": 1}}],
    },
    {
        "id": "sunday-utc",
        "when": {"schedule": "0 18 * * SUN"},
        "then": [{"action": "tag.add", "with": {"tag": "sunday"}}],
    },
]


def test_dispatching_between_due_times_gives_what_a_full_tick_every_step_gives(history, tmp_path):
    """The shortcuts (dispatch alone when nothing else is due; anchors without schedules when
    no slot is) give exactly what ``Engine.tick()`` at every step gives."""
    rulesets = [EXAMPLES, write_ruleset(tmp_path / "rules", "sim-test-timed", TIMED)]
    start, end = datetime(2026, 5, 3, 7, tzinfo=UTC), datetime(2026, 5, 24, tzinfo=UTC)
    fast = simulate(rulesets, history, start=start, end=end)
    paths = [str(path) for path in rulesets]
    step = timedelta(hours=1)  # simulate's default
    with read_events(history) as events:  # Engine.tick() at every stop: the reference
        slow = replay(paths, events, start=start, end=end, step=step, full_ticks=True)
    assert slow.scheduler_counts["full_ticks"] == slow.ticks  # Engine.tick() at every stop
    assert fast.scheduler_counts["full_ticks"] < slow.ticks / 4
    assert fast.per_rule == slow.per_rule
    assert fast.contacts_by_rule == slow.contacts_by_rule
    assert fast.actions == slow.actions
    assert fast.per_rule["sim-test-timed/weekday-morning"]["fired"] > 0
    sundays = fast.per_rule["sim-test-timed/sunday-utc"]["by_week"]  # May (3), 10 and 17
    assert list(sundays)[-2:] == ["2026-W19", "2026-W20"]
    assert list(sundays.values()) == sorted(sundays.values())  # contacts only accumulate


class Mailer:
    """A plugin with an external action: a simulation must never run it."""

    sent: list[str] = []

    @hookimpl
    def register_actions(self, register):
        from pydantic import BaseModel, ConfigDict

        class Params(BaseModel):
            model_config = ConfigDict(extra="forbid")
            template: str

        def run(ctx, params):
            Mailer.sent.append(ctx.contact.id)

        register("mail.send", run, Params, external=True)


def test_external_actions_are_recorded_as_simulated_never_run(history, tmp_path):
    Mailer.sent = []
    welcome = {
        "id": "welcome",
        "when": {"event": "signup"},
        "then": [{"action": "mail.send", "with": {"template": "welcome"}}],
    }
    rulesets = write_ruleset(tmp_path / "rules", "mail", [welcome])
    result = simulate(
        rulesets, history, start=MAY, end=JUNE, registry=Registry({"mailer": Mailer()})
    )
    assert Mailer.sent == []
    assert result.per_rule["mail/welcome"]["fired"] == 50
    assert result.actions == {"simulated": 50}


def test_the_real_store_is_copied_never_touched(history, tmp_path):
    events = read_events(history).events
    split = datetime(2026, 5, 15, tzinfo=UTC)
    real = tmp_path / "real.db"
    with Engine(real, clock=VirtualClock(split), rulesets=[EXAMPLES]) as engine:
        engine.ingest_many([e for e in events if e.occurred_at < split])
        engine.dispatch()

    def fingerprint() -> dict[str, str]:
        return {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(tmp_path.iterdir())
            if p.name.startswith("real.db")
        }

    before = fingerprint()
    counts = rows(real, "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM outbox)")
    runner = CliRunner()
    answer = runner.invoke(
        cli,
        [
            "simulate",
            "--rulesets",
            str(EXAMPLES),
            "--events",
            str(history),
            "--from",
            "2026-05-15",
            "--to",
            "2026-06-01",
            "--db",
            str(real),
            "--json",
        ],
    )
    assert answer.exit_code == 0, answer.output
    result = json.loads(answer.stdout)
    assert fingerprint() == before
    assert (
        rows(real, "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM outbox)") == counts
    )
    assert result["db"] == str(real)
    # Counted: only what the window decided, on top of the copied state (the copy held the
    # first half, the window replays the second: no event is taken for one already stored).
    in_window = [e.id for e in events if e.occurred_at >= split]
    assert result["events"]["duplicates"] == len(in_window) - len(set(in_window))  # resent
    assert result["events"]["skipped_before"] == sum(e.occurred_at < split for e in events)
    assert set(result["totals"]["by_week"]) == {"2026-W20", "2026-W21", "2026-W22"}
    assert result["per_rule"]["lifecycle-stages/second-order"]["fired"] >= 1


def test_a_missing_db_starts_empty_and_says_so(history, tmp_path):
    result = simulate(EXAMPLES, history, start=MAY, end=JUNE, db=tmp_path / "nope.db")
    assert not (tmp_path / "nope.db").exists()
    assert any("no store at" in note for note in result.notes)
    assert result.fired > 0


def test_the_scratch_store_is_deleted_unless_kept(history, tmp_path):
    simulate(EXAMPLES, history, start=MAY, end=JUNE, keep=tmp_path / "keep")
    assert (tmp_path / "keep" / "simulation.db").exists()
    with pytest.raises(SimulationError, match="exists already"):
        simulate(EXAMPLES, history, start=MAY, end=JUNE, keep=tmp_path / "keep")


# -- compare ---------------------------------------------------------------------------------


@pytest.fixture
def versions(tmp_path) -> tuple[Path, Path]:
    """The example rulesets (old) and a changed copy (new): a threshold lowered, a rule
    removed and a rule added."""
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(EXAMPLES, old)
    shutil.copytree(EXAMPLES, new)
    path = new / "lifecycle-stages.json"
    data = json.loads(path.read_text())
    for rule in data["rules"]:
        if rule["id"] == "engaged-by-visits":
            rule["if"]["all"][1]["value"] = 2  # 2 product or pricing pages in a week, not 3
    data["version"] = 2
    path.write_text(json.dumps(data))
    path = new / "lead-scoring.json"
    data = json.loads(path.read_text())
    data["rules"] = [r for r in data["rules"] if r["id"] != "email-open"] + [
        {
            "id": "docs-reader",
            "when": {
                "event": "page.viewed",
                "where": {"fact": "event.properties.path", "op": "starts_with", "value": "/docs"},
            },
            "then": [{"action": "score.add", "with": {"score": "lead", "points": 2}}],
        }
    ]
    data["version"] = 2
    path.write_text(json.dumps(data))
    return old, new


def test_compare_finds_the_changed_rule_and_the_contacts_it_treats_differently(
    history, versions, tmp_path
):
    old, new = versions
    comparison = compare(old, new, history, start=MAY, end=JUNE, keep=tmp_path / "keep")
    by_rule = {r["rule"]: r for r in comparison.rules}
    changed = by_rule["lifecycle-stages/engaged-by-visits"]
    assert (changed["status"], changed["definition"]) == ("differs", "modified")
    # Lowering the threshold can only add contacts: each only-new id is checked in the stores.
    assert changed["only_new"] and not changed["only_old"]

    def fired_for(db: str) -> set[str]:
        found = rows(
            Path(db),
            "SELECT DISTINCT contact_id FROM traces WHERE rule = 'engaged-by-visits' "
            "AND decision = 'fired'",
        )
        return {cid for (cid,) in found}

    assert set(changed["only_new"]) == fired_for(comparison.new.kept) - fired_for(
        comparison.old.kept
    )
    assert by_rule["lead-scoring/email-open"]["status"] == "removed"
    assert by_rule["lead-scoring/docs-reader"]["status"] == "added"
    assert by_rule["lead-scoring/docs-reader"]["fired"]["old"] == 0
    assert by_rule["churn-risk/detractor"]["status"] == "same"
    assert changed["delta"] == changed["fired"]["new"] - changed["fired"]["old"]
    weeks = changed["by_week"]
    assert sum(w["new"] for w in weeks.values()) == changed["fired"]["new"]
    assert comparison.contacts_affected >= set(changed["only_new"])
    states = {r["ruleset"]: r["state"] for r in comparison.rulesets}
    assert {name: states[name] for name in ("lead-scoring", "lifecycle-stages")} == {
        "lead-scoring": "changed",
        "lifecycle-stages": "changed",
    }
    assert states["churn-risk"] == "same"
    assert [r["status"] for r in comparison.rules][:2] == ["removed", "added"]  # news first


def test_compare_of_identical_rulesets_finds_no_difference(history, tmp_path):
    comparison = compare(EXAMPLES, EXAMPLES, history, start=MAY, end=JUNE)
    assert {r["status"] for r in comparison.rules} == {"same"}
    assert comparison.contacts_affected == set()


# -- the command -----------------------------------------------------------------------------


#: The command line's window for MAY .. JUNE, as the tests below pass it.
MAY_ARGS = ("--from", "2026-05-01", "--to", "2026-06-01")


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLM_RULESETS", raising=False)

    def invoke(*args: str):
        return CliRunner().invoke(cli, ["simulate", *args], catch_exceptions=False)

    return invoke


def test_cli_prints_a_table_per_rule_and_week(run, history):
    answer = run(
        "--rulesets",
        str(EXAMPLES),
        "--events",
        str(history),
        *MAY_ARGS,
    )
    assert answer.exit_code == 0, answer.output
    out = answer.stdout
    assert "backtest 2026-05-01 -> 2026-06-01 (31 days)" in out
    assert "lead-scoring/email-open" in out and "W19" in out and "all rules" in out
    assert "nothing was sent" in out
    # 374 events of 50 contacts, plus carts, birthdays, CSAT answers and weekly spend (under
    # the 3 channel pseudo-contacts) that sample events make since issue 20, and customer-since
    # dates and NPS answers after tickets since issue 19.
    assert "453 replayed (53 contacts)" in out


def test_cli_json_gives_the_library_result(run, history):
    answer = run(
        "--rulesets",
        str(EXAMPLES),
        "--events",
        str(history),
        *MAY_ARGS,
        "--json",
    )
    assert answer.exit_code == 0
    data = json.loads(answer.stdout)
    expected = simulate(EXAMPLES, history, start=MAY, end=JUNE)
    assert {k: v["fired"] for k, v in data["per_rule"].items()} == {
        k: v["fired"] for k, v in expected.per_rule.items()
    }
    assert data["contacts_by_rule"]["lead-scoring/email-open"] == sorted(
        expected.contacts_by_rule["lead-scoring/email-open"]
    )


def test_cli_compare_lists_contacts_only_old_and_only_new(run, history, versions):
    old, new = versions
    args = [
        "--compare",
        str(old),
        str(new),
        "--events",
        str(history),
        *MAY_ARGS,
    ]
    answer = run(*args)
    assert answer.exit_code == 0, answer.output
    out = answer.stdout
    assert "lifecycle-stages/engaged-by-visits" in out and "rule modified" in out
    assert "only with new (" in out
    assert "lead-scoring/email-open" in out and "rule removed" in out
    assert "ruleset lifecycle-stages: v1 -> v2, changed" in out
    data = json.loads(run(*args, "--json").stdout)
    [changed] = [r for r in data["rules"] if r["rule"] == "lifecycle-stages/engaged-by-visits"]
    assert changed["only_new_count"] == len(changed["only_new"]) > 0
    assert data["summary"]["rules_removed"] == 1 and data["summary"]["rules_added"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--events", "missing.jsonl"], "Error: events file missing.jsonl does not exist"),
        (["--from", "2026-06-01", "--to", "2026-05-01"], "Error: --from 2026-06-01 must be before"),
        (["--from", "2026-06-01", "--to", "2026-06-01"], "Error: --from 2026-06-01 must be before"),
        (["--from", "May 1st"], "Error: --from 'May 1st' is not a date"),
        (["--rulesets", "nowhere"], "Error: no rulesets at nowhere"),
        (["--rulesets", "bad"], "Error: invalid rulesets (1 problem; clm validate"),
        (["--step", "5s"], "Error: step '5s' is not a duration"),
        (["--db", "events.jsonl"], "(not a clm-engine store?)"),
    ],
)
def test_cli_bad_input_is_one_clear_line_and_exit_1(run, history, tmp_path, args, message):
    shutil.copy(history, tmp_path / "events.jsonl")
    write_ruleset(
        tmp_path / "bad",
        "broken",
        [
            {
                "id": "x",
                "when": {"event": "signup"},
                "then": [{"action": "tag.ad", "with": {"tag": "a"}}],
            }
        ],
    )
    given = {
        "--rulesets": str(EXAMPLES),
        "--events": "events.jsonl",
        "--from": "2026-05-01",
        "--to": "2026-06-01",
    }
    for flag, value in zip(args[::2], args[1::2], strict=True):
        given[flag] = value
    answer = run(*[part for pair in given.items() for part in pair])
    assert answer.exit_code == 1
    assert answer.stdout == ""
    assert answer.stderr.count("\n") == 1 and answer.stderr.startswith("Error: ")
    assert message in answer.stderr


def test_cli_lines_that_are_not_events_are_reported_and_exit_1(run, history, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(history.read_text() + '{"contact_id": "c1", "type": "x"}\nnot json\n')
    answer = run(
        "--rulesets",
        str(EXAMPLES),
        "--events",
        str(path),
        *MAY_ARGS,
    )
    assert answer.exit_code == 1
    assert "all rules" in answer.stdout  # the report still comes
    # (line numbers after the 453 events of the history: see the note on its count above)
    assert "2 lines of" in answer.stderr and "line 454:" in answer.stderr


def test_cli_rulesets_and_compare_exclude_each_other(run, history):
    answer = run(
        "--rulesets",
        str(EXAMPLES),
        "--compare",
        str(EXAMPLES),
        str(EXAMPLES),
        "--events",
        str(history),
        *MAY_ARGS,
    )
    assert answer.exit_code == 1
    assert "either --rulesets or --compare" in answer.stderr


# -- small parts -----------------------------------------------------------------------------


def test_steps_and_dates_parse_as_documented():
    assert parse_step("15m") == timedelta(minutes=15)
    assert parse_step("1h") == timedelta(hours=1)
    assert parse_step("1d") == timedelta(days=1)
    with pytest.raises(SimulationError):
        parse_step("2d")  # coarser than a day would run a day's delays late
    assert parse_when("2026-05-01") == MAY
    assert parse_when("2026-05-01T02:00:00+02:00") == MAY
    with pytest.raises(SimulationError, match="before --to"):
        simulate(EXAMPLES, [], start=JUNE, end=MAY)


# -- the history -----------------------------------------------------------------------------


def test_a_history_larger_than_a_run_is_sorted_on_disk_stably_and_cleaned_up(history, tmp_path):
    """Runs of a few KB, merged two at a time over several rounds, give the order an in-memory
    stable sort gives; bad lines keep their numbers; the temporary files go on close."""
    lines = history.read_text().splitlines()
    shuffled = lines[::-1]  # every event late, and ties reversed
    shuffled.insert(7, "not json")
    shuffled.insert(20, "")
    path = tmp_path / "shuffled.jsonl"
    path.write_text("\n".join(shuffled) + "\n")
    expected = sorted(
        (e for e in read_events(path).events), key=lambda e: e.occurred_at
    )  # the in-memory path: one run
    with read_events(path, run_bytes=4096, fan_in=2) as spilled:
        assert spilled.count == len(lines) and spilled._memory is None  # on disk
        assert [e.id for e in spilled.events] == [e.id for e in expected]
        assert spilled.rejected == [(8, spilled.rejected[0][1])] and spilled.rejected_count == 1
        folder = Path(spilled._folder)
        assert len(list(folder.iterdir())) == 1  # the runs merged into one file
        with spilled.window(MAY + timedelta(days=10), MAY + timedelta(days=20)) as window:
            taken = window.take_until(MAY + timedelta(days=15))
            taken += window.take_until(JUNE)
            window.finish()
        inside = [e for e in expected if MAY + timedelta(days=10) <= e.occurred_at]
        inside = [e for e in inside if e.occurred_at < MAY + timedelta(days=20)]
        assert [e.id for e in taken] == [e.id for e in inside]
        assert window.skipped_before + window.taken + window.skipped_after == len(lines)
    assert not folder.exists()


def test_a_simulation_from_a_history_sorted_on_disk_decides_the_same(history, tmp_path):
    in_memory = simulate(EXAMPLES, history, start=MAY, end=JUNE)
    with read_events(history, run_bytes=8192, fan_in=3) as spilled:
        on_disk = simulate(EXAMPLES, spilled, start=MAY, end=JUNE)
        assert spilled._memory is None
    assert on_disk.per_rule == in_memory.per_rule
    assert on_disk.events == in_memory.events
    assert on_disk.fires_by_contact == in_memory.fires_by_contact


def test_items_of_any_kind_make_a_history_read_once_when_first_used():
    items = iter(
        [
            event("c1", "signup", "2026-05-03"),
            '{"contact_id": "c2", "type": "signup", "occurred_at": "2026-05-02T00:00:00Z"}',
            {"contact_id": "c3"},
        ]
    )
    history = EventHistory.from_items(items)
    assert next(items, None) is not None  # nothing read yet: the iterator is still full
    history = EventHistory.from_items(
        [
            event("c1", "signup", "2026-05-03"),
            '{"contact_id": "c2", "type": "signup", "occurred_at": "2026-05-02T00:00:00Z"}',
            {"contact_id": "c3"},
        ]
    )
    assert [e.contact_id for e in history.events] == ["c2", "c1"]
    assert history.rejected_count == 1 and history.rejected[0][0] == 3
    assert (history.read, history.count) == (3, 2)
