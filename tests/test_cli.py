from __future__ import annotations

import json

import pytest

from clm_engine import ClmError
from clm_engine.cli import print_tsv
from tests.helpers import event


def write_jsonl(path, lines):
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


GOOD = [
    event(
        "c1",
        "signup",
        "2026-10-01",
        email="ada@example.com",
        first_name="Ada",
        consent={"email": True},
    ),
    event("c1", "purchase", "2026-10-03", amount=30, order_id="o1"),
    event("c2", "signup", "2026-10-02", email="bob@example.com"),
]


def test_ingest_reports_a_summary_and_is_idempotent(run, tmp_path):
    path = write_jsonl(tmp_path / "events.jsonl", GOOD)
    first = run("ingest", str(path), "--json")
    assert first.exit_code == 0
    assert json.loads(first.output) | {} == json.loads(first.output)
    assert (json.loads(first.output)["ingested"], json.loads(first.output)["duplicates"]) == (3, 0)
    again = run("ingest", str(path))
    assert again.exit_code == 0
    assert "0 ingested, 3 duplicates, 0 rejected, 0 failed" in again.output
    assert (tmp_path / "clm.db").exists()


def test_bad_lines_are_reported_by_number_written_to_rejects_and_good_lines_land(run, tmp_path):
    path = write_jsonl(
        tmp_path / "events.jsonl",
        [
            GOOD[0],
            '{"contact_id": "c9", "type": "signup", "occurred_at": "2026-10-01"}',
            "",
            "{broken",
            GOOD[1],
            {"type": "signup", "occurred_at": "2026-10-01T00:00:00Z"},
        ],
    )
    result = run("ingest", str(path), "--db", "x.db")
    assert result.exit_code == 1
    assert "2 ingested, 0 duplicates, 3 rejected" in result.output
    assert (
        "line 2: invalid event: occurred_at: needs an ISO 8601 time with an offset" in result.output
    )
    assert "line 4: invalid event: not valid JSON" in result.output
    assert "line 6: invalid event: contact_id: is required but missing" in result.output
    rejects = [json.loads(line) for line in (tmp_path / "events.jsonl.rejects.jsonl").open()]
    assert [r["line"] for r in rejects] == [2, 4, 6]
    assert rejects[1]["input"] == "{broken"


def test_reducer_failures_are_summarised_and_listed(run, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [event("c1", "purchase", "2026-10-01", amount="lots")])
    result = run("ingest", str(path))
    assert result.exit_code == 1
    assert (
        "reducer core.purchase failed: ValueError: a purchase needs a numeric 'amount'"
        in result.output
    )
    listed = json.loads(run("failures", "--json").output)
    assert [(f["type"], f["reducer"]) for f in listed] == [("purchase", "core.purchase")]


def test_contacts_show_list_and_forget(run, tmp_path):
    run("ingest", str(write_jsonl(tmp_path / "e.jsonl", GOOD)))
    shown = run("contacts", "show", "c1")
    assert shown.exit_code == 0
    assert "ada@example.com" in shown.output and "(new) -> awareness" in shown.output
    assert "purchase" in shown.output
    data = json.loads(run("contacts", "show", "c1", "--json").output)
    assert data["contact"]["metrics"]["orders_count"] == 1
    assert data["stage_history"][0]["to_stage"] == "awareness"
    assert [e["type"] for e in data["recent_events"]] == ["purchase", "signup"]

    listed = json.loads(run("contacts", "list", "--stage", "awareness", "--json").output)
    assert listed["total"] == 2 and [c["id"] for c in listed["contacts"]] == ["c1", "c2"]
    assert "2 contacts in stage awareness" in run("contacts", "list", "--stage", "awareness").output
    assert (
        json.loads(run("contacts", "list", "--stage", "retention", "--json").output)["total"] == 0
    )
    unknown = run("contacts", "list", "--stage", "retnetion")
    assert unknown.exit_code == 1 and "unknown stage 'retnetion'" in unknown.output

    forgotten = run("contacts", "forget", "c1")
    assert forgotten.exit_code == 0
    assert "events: 2 rows removed" in forgotten.output
    missing = run("contacts", "show", "c1")
    assert missing.exit_code == 1
    assert missing.output.strip() == "Error: no contact 'c1' in clm.db"


def test_report_prints_what_the_engine_knows(run, tmp_path):
    run("ingest", str(write_jsonl(tmp_path / "e.jsonl", GOOD)))
    report = json.loads(run("report", "--json").output)
    assert (report["contacts"], report["orders"], report["revenue"]) == (2, 1, 30.0)
    assert report["events_by_type"] == {"signup": 2, "purchase": 1}
    text = run("report").output
    assert "events by type" in text and "revenue" in text


def test_errors_are_one_line_never_a_traceback(run, tmp_path):
    (tmp_path / "junk.db").write_text("not a database" * 200)
    for args in (["report", "--db", "absent.db"], ["contacts", "show", "x", "--db", "junk.db"]):
        result = run(*args)
        assert result.exit_code == 1
        assert len(result.output.strip().splitlines()) == 1
        assert result.output.startswith("Error: ")
        assert "Traceback" not in result.output


def test_migrate_and_plugins(run):
    migrated = run("migrate", "--db", "new.db")
    # 14 core migrations, and the core's declared tables: survey_keys (1), channel_messages
    # (table, index) and experiment_exposures (table, index).
    assert "applied 21 migration(s) to new.db" in migrated.output
    assert "is up to date" in run("migrate", "--db", "new.db").output
    plugins = json.loads(run("plugins", "--json").output)["plugins"]
    assert {p["name"]: p["source"] for p in plugins}["clm_engine.builtins.reducers"] == "built-in"


RULES = {
    "ruleset": "cli-test",
    "version": 1,
    "rules": [
        {
            "id": "first-order",
            "description": "The first order makes a customer",
            "when": {"event": "purchase"},
            "if": {"fact": "contact.metrics.orders_count", "op": "eq", "value": 1},
            "then": [
                {"action": "stage.set", "with": {"stage": "purchase", "reason": "first order"}}
            ],
        },
        {
            "id": "promoter",
            "when": {"event": "nps.answered"},
            "then": [{"action": "tag.add", "with": {"tag": "promoter"}}],
        },
    ],
}


@pytest.fixture
def with_rules(run, tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES))
    events = write_jsonl(tmp_path / "e.jsonl", GOOD)
    return rules, events


def test_ingest_with_rules_runs_internal_actions_inline(run, with_rules):
    rules, events = with_rules
    ingested = run("ingest", str(events), "--rulesets", str(rules))
    assert "1 actions decided (1 ran inline)" in ingested.output
    shown = json.loads(run("contacts", "show", "c1", "--json").output)
    assert shown["contact"]["stage"] == "purchase"  # no dispatch needed for a stage change
    dispatched = run("dispatch", "--rulesets", str(rules))
    assert "nothing was due" in dispatched.output


def test_ingest_can_dispatch_as_it_goes(run, with_rules):
    rules, events = with_rules
    result = json.loads(
        run("ingest", str(events), "--rulesets", str(rules), "--dispatch", "--json").output
    )
    assert (result["actions_enqueued"], result["actions_ran_inline"]) == (1, 1)
    assert result["dispatched"]["outcomes"] == {}


def test_explain_prints_the_decision_tree_and_why_not(run, with_rules):
    rules, events = with_rules
    run("ingest", str(events), "--rulesets", str(rules), "--dispatch")
    text = run("explain", "c1", "--rulesets", str(rules)).output
    assert "first-order" in text and "fired" in text
    assert "contact.metrics.orders_count eq 1" in text and "saw 1" in text
    assert "stage.set" in text and "done" in text
    assert "not evaluated: the trigger never came (no nps.answered event" in text
    data = json.loads(
        run("explain", "c1", "--rulesets", str(rules), "--rule", "first-order", "--json").output
    )
    [entry] = data["rules"]
    assert entry["decisions"][0]["actions"][0]["status"] == "done"
    missing = run("explain", "nobody", "--rulesets", str(rules))
    assert missing.exit_code == 1 and missing.output.startswith("Error: no contact 'nobody'")


def test_prune_removes_old_traces_in_batches_and_explain_says_so(run, with_rules):
    rules, events = with_rules
    run("ingest", str(events), "--rulesets", str(rules))
    dry = run("prune", "--older-than", "P30D", "--dry-run")
    assert dry.exit_code == 0 and dry.output.startswith("would remove 1 traces of decisions and")
    assert "saw 1" in run("explain", "c1", "--rulesets", str(rules)).output  # still there
    done = json.loads(run("prune", "--older-than", "P30D", "--batch-size", "1", "--json").output)
    assert (done["traces"], done["action_history"], done["dry_run"]) == (1, 0, False)
    text = run("explain", "c1", "--rulesets", str(rules)).output
    assert "its trace was pruned" in text and "stage.set" in text and "saw 1" not in text
    assert run("prune", "--older-than", "P30D").output.startswith("removed 0 traces")
    bad = run("prune", "--older-than", "90 days")
    assert bad.exit_code == 1 and "--older-than" in bad.output and "P30D" in bad.output
    assert run("prune").exit_code == 2  # a retention is required: --older-than or the setting


def test_check_is_a_dry_run_from_the_command_line(run, with_rules, tmp_path):
    rules, events = with_rules
    run("ingest", str(events))  # without rules: nothing enqueued
    text = run("check", "--contact", "c1", "--rulesets", str(rules)).output
    assert "would fire first-order" in text
    ids = tmp_path / "ids.txt"
    ids.write_text("c1\nc2\n")
    many = run("check", "--contacts", str(ids), "--rulesets", str(rules)).output
    assert "first-order: would fire for 1" in many
    assert "dispatched 0 actions" in run("dispatch", "--rulesets", str(rules)).output
    assert run("check", "--contact", "c1").exit_code == 1  # no rulesets: a clear error


def test_an_invalid_ruleset_stops_the_command_with_its_location(run, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({**RULES, "rules": [{**RULES["rules"][1], "then": [{"action": "tag.ad"}]}]})
    )
    events = write_jsonl(tmp_path / "e.jsonl", GOOD)
    result = run("ingest", str(events), "--rulesets", str(bad))
    assert result.exit_code == 1
    assert "/rules/0/then/0/action" in result.output and "tag.add" in result.output
    assert (
        not (tmp_path / "clm.db").exists()
        or json.loads(run("report", "--json").output)["events"] == 0
    )


def test_the_late_action_limit_is_set_from_the_environment(monkeypatch, tmp_path):
    from datetime import timedelta

    from clm_engine.cli.common import open_engine

    monkeypatch.setenv("CLM_LATE_ACTION_LIMIT", "PT12H")
    with open_engine(tmp_path / "clm.db", must_exist=False) as engine:
        assert engine.late_action_limit == timedelta(hours=12)
    monkeypatch.setenv("CLM_LATE_ACTION_LIMIT", "three days")
    with pytest.raises(ClmError, match="not an ISO 8601 duration"):
        open_engine(tmp_path / "clm.db", must_exist=False)


def test_explain_and_check_text_show_brackets_as_written_and_segments_by_their_own_trace(
    run, tmp_path
):
    rules = tmp_path / "brackets.json"
    rules.write_text(
        json.dumps(
            {
                "ruleset": "brackets",
                "version": 1,
                "trace": "all",
                "segments": {
                    "work": {"fact": "contact.email", "op": "ends_with", "value": "[b]x.com"}
                },
                "rules": [
                    {
                        "id": "work-address",
                        "when": {"event": "signup"},
                        "if": {
                            "all": [
                                {"fact": "contact.email", "op": "matches", "value": "^[a-z0-9.]+@"},
                                {"op": "in_segment", "value": "work"},
                            ]
                        },
                        "then": [{"action": "tag.add", "with": {"tag": "work"}}],
                    }
                ],
            }
        )
    )
    event = {
        "id": "e1",
        "contact_id": "c[1]",
        "type": "signup",
        "occurred_at": "2026-03-01T10:00:00Z",
        "properties": {"email": "a.b@[bold]x.com"},
    }
    events = write_jsonl(tmp_path / "brackets.jsonl", [event])
    assert run("ingest", str(events), "--rulesets", str(rules)).exit_code == 0
    for command in ("explain", "check"):
        args = ["c[1]"] if command == "explain" else ["--contact", "c[1]"]
        text = run(command, *args, "--rulesets", str(rules)).output
        assert 'contact.email matches "^[a-z0-9.]+@"  saw "a.b@[bold]x.com"' in text, text
        assert text.startswith("c[1]")
        # The segment shows what its own condition saw, not the null of a fact it lacks.
        assert '✗ in segment "work"' in text and "saw null" not in text
        assert 'contact.email ends_with "[b]x.com"  saw "a.b@[bold]x.com"' in text
    shown = run("contacts", "show", "c[1]").output
    assert shown.startswith("c[1]  a.b@[bold]x.com") and "email=a.b@[bold]x.com" in shown
    assert "c[1]\ta.b@[bold]x.com" in run("contacts", "list", "--tsv").output
    assert "a.b@[bold]x.com" in run("contacts", "list").output


def test_contacts_list_knows_a_rulesets_own_stages_and_prints_whole_values_as_tsv(run, tmp_path):
    rules = tmp_path / "service.json"
    rules.write_text(
        json.dumps(
            {
                "ruleset": "service-model",
                "version": 1,
                "stages": ["lead", "customer", "service"],
                "rules": [
                    {
                        "id": "registered",
                        "when": {"event": "signup"},
                        "then": [{"action": "stage.set", "with": {"stage": "service"}}],
                    }
                ],
            }
        )
    )
    events = write_jsonl(
        tmp_path / "service.jsonl",
        [
            {
                "id": f"e{n}",
                "contact_id": contact,
                "type": "signup",
                "occurred_at": "2026-05-14T10:00:00Z",
                "properties": {"email": f"{contact}@a-rather-long-domain-name.example.com"},
            }
            for n, contact in enumerate(["c1", "c2"])
        ],
    )
    ingested = run("ingest", str(events), "--rulesets", str(rules))
    assert ingested.exit_code == 0, ingested.output
    unknown = run("contacts", "list", "--stage", "servce", "--rulesets", str(rules))
    assert unknown.exit_code == 1 and "the stages are: lead, customer, service" in unknown.output
    listed = run("contacts", "list", "--stage", "service", "--rulesets", str(rules), "--tsv")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0] == "id\temail\tstage\torders\tspent\tlast_event_at"
    assert lines[1].split("\t") == [
        "c1",
        "c1@a-rather-long-domain-name.example.com",
        "service",
        "0",
        "0",
        "2026-05-14T10:00:00.000000Z",
    ]
    assert lines[2].split("\t")[:3] == ["c2", "c2@a-rather-long-domain-name.example.com", "service"]
    assert len(lines) == 3
    none = run("contacts", "list", "--stage", "lead", "--rulesets", str(rules), "--tsv")
    assert none.output.splitlines() == ["id\temail\tstage\torders\tspent\tlast_event_at"]


def test_tsv_keeps_one_line_and_the_same_fields_whatever_a_value_holds(capsys):
    print_tsv(["a", "b"], [["x\ty\nz\\", None], [1.5, "[red]plain"]])
    assert capsys.readouterr().out.splitlines() == ["a\tb", "x\\ty\\nz\\\\\t", "1.5\t[red]plain"]
