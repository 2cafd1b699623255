"""What a backtest (``clm simulate``) says of each experiment: per arm, the contacts exposed,
the decisions taken and the actions they queued, what those actions were, and the report's
conversions and comparisons over the simulated history."""

from __future__ import annotations

from collections import Counter
from typing import Any

from . import KIND
from .exposures import TABLE
from .report import build_report, count_arms


def summaries(engine: Any, fires: dict[str, Counter[str]]) -> list[dict[str, Any]]:
    """One entry per loaded experiment; ``fires`` is each rule's fires by contact (the run's)."""
    book = engine.rulebook
    out = []
    for name, experiment in sorted(book.documents.get(KIND, {}).items()):
        rule = book.rules.get((experiment.ruleset, experiment.rule))
        compiler = experiment.compiler or (rule.compiler if rule is not None else None)
        report = build_report(experiment, count_arms(engine.store, experiment, compiler))
        arm_of: dict[str, str] = {}
        if TABLE in engine.store.tables:
            for row in engine.store.tables[TABLE].rows(
                {"experiment": name}, columns=["contact_id", "arm"]
            ):
                arm_of[row["contact_id"]] = row["arm"]
        decisions: Counter[str] = Counter()
        for contact, count in fires.get(f"{experiment.ruleset}/{experiment.rule}", {}).items():
            if contact in arm_of:
                decisions[arm_of[contact]] += count
        summary = report.to_json()
        for arm in summary["arms"]:
            actions = experiment.actions.get(arm["arm"], ())
            if experiment.receives is not None:  # a document's (a drip step): one run each
                arm["decisions"] = arm["exposed"]
                arm["receives"] = experiment.receives.get(arm["arm"], [])
                arm["actions_queued"] = arm["exposed"] * len(arm["receives"])
                continue
            arm["decisions"] = decisions.get(arm["arm"], 0)
            arm["actions_queued"] = decisions.get(arm["arm"], 0) * len(actions)
            arm["receives"] = [{"action": call.action, "with": params} for call, params in actions]
        out.append(summary)
    return out
