"""A drip step with an experiment: each contact's arm picks the step's template (a subject-line
test), a holdout skips the step's email and the drip goes on; the engine records the
exposures and reports the experiment like a rule's."""

from __future__ import annotations

import json

import pytest

from clm_engine import RulesetError
from clm_engine.experiments.assignment import assign
from clm_engine.models import Experiment
from conftest import signup

EXPERIMENT = {
    "name": "welcome-subject",
    "arms": [
        {"name": "control", "weight": 45},
        {"name": "question", "weight": 45, "with": {"template": "onboarding-welcome-b"}},
        {"name": "holdout", "weight": 10, "holdout": True},
    ],
    "goal": {"event": "purchase", "within": "P14D", "revenue": "amount"},
}


def drip(mail, experiment=EXPERIMENT):
    sequence = json.loads((mail.rules / "onboarding.json").read_text())
    sequence["sequence"] = "tested"
    sequence["steps"][0]["experiment"] = experiment
    mail.write("tested.json", sequence)
    mail.ruleset(
        {
            "id": "start",
            "when": {"event": "signup"},
            "then": [{"action": "email.start_sequence", "with": {"sequence": "tested"}}],
        }
    )


def test_each_arm_gets_its_template_and_the_holdout_skips_the_step(mail):
    drip(mail)
    engine = mail.open()
    contacts = [f"c{i}" for i in range(40)]
    for contact in contacts:
        engine.ingest(signup(contact))
    engine.tick()
    spec = Experiment.model_validate(EXPERIMENT)
    arms = {c: assign("welcome-subject", c, spec.arms).name for c in contacts}
    assert set(arms.values()) == {"control", "question", "holdout"}
    welcome = {
        r["contact_id"]: r["template"]
        for r in mail.log()
        if r["step"] == "welcome" and r["status"] == "sent"
    }
    for contact, arm in arms.items():
        expected = {"control": "onboarding-welcome", "question": "onboarding-welcome-b"}
        assert welcome.get(contact) == expected.get(arm), contact
    exposures = engine.store.tables["experiment_exposures"].rows({"experiment": "welcome-subject"})
    assert {r["contact_id"]: r["arm"] for r in exposures} == arms
    assert {r["rule"] for r in exposures} == {"step welcome"}
    # the holdout's drip goes on: its next step is queued like everyone's
    held = next(c for c, a in arms.items() if a == "holdout")
    steps = [r for r in engine.store.actions_for(held) if r.action == "email.sequence_step"]
    assert [r.params["step"] for r in steps] == ["welcome", "tips"]
    assert steps[0].result["skipped_send"].startswith("holdout")

    from clm_engine.cli.experiments import experiment_reports

    (report,) = experiment_reports(engine)
    assert (report.ruleset, report.rule) == ("sequence tested", "step welcome")
    assert {a.name: a.exposed for a in report.arms} == {
        arm: list(arms.values()).count(arm) for arm in ("control", "question", "holdout")
    }


def test_a_step_experiment_is_checked_where_it_is_written(mail):
    bad = json.loads(json.dumps(EXPERIMENT))
    bad["arms"][1]["with"] = {"template": "no-such-template", "subject": "x"}
    bad["arms"][2]["with"] = {"template": "onboarding-welcome-b"}
    bad["control"] = "holdout"
    drip(mail, bad)
    with pytest.raises(RulesetError) as raised:
        mail.open()
    text = str(raised.value)
    for pointer in (
        "/steps/0/experiment/arms/1/with/template",
        "/steps/0/experiment/arms/1/with/subject",
        "/steps/0/experiment/arms/2/with",
        "/steps/0/experiment/control",
    ):
        assert pointer in text, pointer
