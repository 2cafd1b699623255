"""An experiment's report: exposures and conversions counted from the store, per arm, put
through ``stats``; a winner only when the difference is significant (``docs/experiments.md``).

A contact converts when a goal event (its type, meeting ``where``) happens at or after its
first exposure and at most ``within`` later; its revenue is the sum of the goal events'
``revenue`` property in that window. Contacts still inside their window count as exposed and
not (yet) converted: arms are filled at random, so this lowers every arm alike and the
comparison stays fair, but rates rise as windows close.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..models import Contact, Event
from ..store import experiments as sql
from ..types import FactContext
from .compiled import CompiledExperiment
from .exposures import TABLE
from .stats import POWER, ArmCounts, Comparison, compare, sample_size

#: Below this many exposed contacts per arm, no winner is declared whatever the test says: the
#: normal approximations behind both methods need some data.
MIN_PER_ARM = 30


@dataclass
class ExperimentReport:
    name: str
    ruleset: str
    rule: str
    method: str
    level: float
    goal: str
    control: str
    holdout: str | None
    arms: list[ArmCounts]
    weights: dict[str, float]
    vs_control: list[Comparison] = field(default_factory=list)
    vs_holdout: list[Comparison] = field(default_factory=list)
    winner: str | None = None
    verdict: str = ""
    warnings: list[str] = field(default_factory=list)
    needed_per_arm: int | None = None
    validity: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "experiment": self.name,
            "ruleset": self.ruleset,
            "rule": self.rule,
            "method": self.method,
            "level": self.level,
            "validity": self.validity,
            "goal": self.goal,
            "control": self.control,
            "holdout": self.holdout,
            "arms": [
                {
                    "arm": arm.name,
                    "weight": self.weights.get(arm.name),
                    "holdout": arm.name == self.holdout,
                    "exposed": arm.exposed,
                    "converted": arm.converted,
                    "rate": _finite(arm.rate),
                    "revenue": _finite(arm.revenue),
                    "revenue_per_contact": _finite(arm.revenue_per_contact),
                }
                for arm in self.arms
            ],
            "vs_control": [_comparison_json(c) for c in self.vs_control],
            "vs_holdout": [_comparison_json(c) for c in self.vs_holdout],
            "winner": self.winner,
            "verdict": self.verdict,
            "needed_per_arm": self.needed_per_arm,
            "warnings": self.warnings,
        }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _comparison_json(c: Comparison) -> dict[str, Any]:
    return {
        "arm": c.arm,
        "baseline": c.baseline,
        "difference": c.difference,
        "relative": _finite(c.relative),
        "interval": [c.low, c.high],
        "p_value": c.p_value,
        "tested_at": c.level,
        "significant": c.significant,
        "revenue_difference": _finite(c.revenue_difference),
        "revenue_interval": (
            [c.revenue_low, c.revenue_high] if c.revenue_low is not None else None
        ),
        "revenue_p_value": _finite(c.revenue_p_value),
    }


def count_arms(store: Any, experiment: CompiledExperiment, compiler: Any) -> list[ArmCounts]:
    """Exposed, converted and revenue per arm, from the store, every declared arm listed (in
    the ruleset's order; arms no longer declared but still holding exposures after them)."""
    spec = experiment.spec
    goal = spec.goal
    window = experiment.window
    where = compiler.compile([goal.where]) if goal.where is not None else None
    contacts: dict[str, Contact] = {}
    totals: dict[str, list[float]] = {arm.name: [0, 0, 0.0, 0.0] for arm in spec.arms}
    if store.tables is None or TABLE not in store.tables:
        return [ArmCounts(name, 0, 0) for name in totals]
    current: tuple[str, str] | None = None
    converted, revenue = False, 0.0

    def close() -> None:
        if current is None:
            return
        arm_totals = totals.setdefault(current[0], [0, 0, 0.0, 0.0])
        arm_totals[0] += 1
        arm_totals[1] += int(converted)
        arm_totals[2] += revenue
        arm_totals[3] += revenue * revenue

    rows = sql.exposures_with_goals(store, spec.name, goal.event)
    for arm, contact_id, exposed_at, event_id, occurred_at, properties in rows:
        if current != (arm, contact_id):
            close()
            current, converted, revenue = (arm, contact_id), False, 0.0
        if occurred_at is None:
            continue
        start = datetime.fromisoformat(exposed_at)
        moment = datetime.fromisoformat(occurred_at)
        if moment - start > window:
            continue
        if where is not None:
            contact = contacts.get(contact_id) or store.get_contact(contact_id)
            if contact is None:
                continue
            contacts[contact_id] = contact
            event = Event(
                id=event_id,
                contact_id=contact_id,
                type=goal.event,
                occurred_at=moment,
                properties=properties or {},
            )
            ctx = FactContext(contact=contact, now=moment, event=event)
            if not where.matching(ctx):
                continue
        converted = True
        if goal.revenue is not None:
            revenue += _number_at(properties or {}, goal.revenue)
    close()
    return [ArmCounts(name, int(n), int(x), r, r2) for name, (n, x, r, r2) in totals.items()]


def _number_at(properties: dict[str, Any], path: str) -> float:
    value: Any = properties
    for key in path.split("."):
        if not isinstance(value, dict):
            return 0.0
        value = value.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) else 0.0


def build_report(experiment: CompiledExperiment, arms: list[ArmCounts]) -> ExperimentReport:
    """The comparisons, warnings and verdict for counted ``arms``."""
    spec = experiment.spec
    by_name = {arm.name: arm for arm in arms}
    control = experiment.control
    holdout = experiment.holdouts[0] if experiment.holdouts else None
    acting = [a.name for a in spec.arms if not a.holdout]
    goal = f"{spec.goal.event} within {_duration(experiment.window)} of exposure" + (
        " (filtered)" if spec.goal.where is not None else ""
    )
    if spec.goal.revenue:
        goal += f"; revenue: {spec.goal.revenue}"
    report = ExperimentReport(
        name=spec.name,
        ruleset=experiment.ruleset,
        rule=experiment.rule,
        method=spec.method,
        level=spec.level,
        goal=goal,
        control=control,
        holdout=holdout,
        arms=arms,
        weights={a.name: a.weight for a in spec.arms},
    )
    if spec.method == "sequential":
        report.validity = (
            "always valid: the intervals and p-values hold however often and whenever you look "
            "(mixture sequential probability ratio test)"
        )
    else:
        report.validity = (
            f"fixed horizon: the intervals and p-values hold only when read once, at the "
            f"planned sample size ({spec.sample_size} per arm); looking earlier and stopping "
            "on a good day makes false winners far more likely"
        )
    treatments = [name for name in acting if name != control]
    family = max(1, len(treatments))

    def against(name: str, baseline: str, level: float) -> Comparison | None:
        return compare(
            by_name[name],
            by_name[baseline],
            level=level,
            method=spec.method,
            minimum_effect=spec.minimum_effect,
        )

    for name in treatments:
        found = against(name, control, spec.level / family)
        if found is not None:
            report.vs_control.append(found)
    if holdout is not None:
        for name in acting:
            found = against(name, holdout, spec.level / len(acting))
            if found is not None:
                report.vs_holdout.append(found)
    _warn_and_decide(report, experiment, by_name, acting, treatments)
    return report


def _warn_and_decide(
    report: ExperimentReport,
    experiment: CompiledExperiment,
    by_name: dict[str, ArmCounts],
    acting: list[str],
    treatments: list[str],
) -> None:
    spec = experiment.spec
    control = by_name[experiment.control]
    family = max(1, len(treatments))
    smallest = min(by_name[name].exposed for name in acting)
    baseline_rate = control.rate if control.rate is not None else 0.0
    if 0 < baseline_rate < 1 or control.exposed:
        needed = sample_size(baseline_rate, spec.minimum_effect, spec.level / family)
        report.needed_per_arm = needed
        if smallest < needed:
            report.warnings.append(
                f"underpowered: about {needed:,} contacts per arm are needed to detect a change "
                f"of {spec.minimum_effect * 100:g} points from the control's "
                f"{baseline_rate * 100:.1f}% with {POWER:.0%} power "
                f"(fixed-horizon count; the smallest arm has {smallest:,})"
            )
    if smallest < MIN_PER_ARM:
        report.verdict = f"no winner: too few exposures yet (under {MIN_PER_ARM} in an arm)"
        return
    if spec.method == "fixed" and spec.sample_size is not None and smallest < spec.sample_size:
        report.verdict = (
            f"no winner yet: the fixed-horizon test is read at {spec.sample_size:,} per arm "
            f"(the smallest arm has {smallest:,})"
        )
        return
    if not report.vs_control:
        report.verdict = "no comparison: the experiment has one acting arm (see vs holdout)"
        return
    better = [c for c in report.vs_control if c.significant and c.difference > 0]
    if better:
        best = max(better, key=lambda c: c.difference)
        report.winner = best.arm
        report.verdict = (
            f"winner: {best.arm}, {best.difference * 100:+.2f} points over {best.baseline} "
            f"(p = {best.p_value:.3g} < {best.level:.3g})"
        )
    elif all(c.significant and c.difference < 0 for c in report.vs_control):
        report.winner = experiment.control
        report.verdict = f"winner: {experiment.control} (every other arm is significantly worse)"
    else:
        report.verdict = (
            f"no winner: no difference from {experiment.control} is significant at "
            f"{spec.level:g}"
            + (f" (Bonferroni: {spec.level / family:.3g} each)" if family > 1 else "")
        )


def _duration(delta: Any) -> str:
    days = delta.days
    rest = delta.seconds
    if rest == 0:
        return f"{days} days" if days != 1 else "1 day"
    return f"{delta.total_seconds() / 3600:g} hours"


def reports(
    store: Any, experiments: dict[str, CompiledExperiment], compilers: dict[tuple[str, str], Any]
) -> list[ExperimentReport]:
    """A report per experiment (by name), each counted from ``store``."""
    out = []
    for name in sorted(experiments):
        experiment = experiments[name]
        compiler = experiment.compiler or compilers[(experiment.ruleset, experiment.rule)]
        out.append(build_report(experiment, count_arms(store, experiment, compiler)))
    return out
