"""``clm experiments report``: each experiment's arms, lifts, intervals and verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..errors import ClmError
from ..experiments import KIND
from ..experiments.report import ExperimentReport, reports
from . import cli
from .common import console, db_option, json_option, open_engine, print_json, rulesets_option


@cli.group()
def experiments() -> None:
    """A/B tests and holdouts declared in rulesets (docs/experiments.md)."""


def experiment_reports(engine: Any, name: str | None = None) -> list[ExperimentReport]:
    """The reports of the engine's loaded experiments (only ``name``, if given)."""
    declared = dict(engine.rulebook.documents.get(KIND, {}))
    if name is not None:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise ClmError(f"no experiment {name!r} in the rulesets; declared: {known}")
        declared = {name: declared[name]}
    compilers = {key: rule.compiler for key, rule in engine.rulebook.rules.items()}
    return reports(engine.store, declared, compilers)


@experiments.command("report")
@click.argument("name", required=False)
@db_option
@rulesets_option
@json_option
def report_(
    name: str | None, db_path: Path, ruleset_paths: tuple[Path, ...], as_json: bool
) -> None:
    """Per arm: exposures, conversions, rate, revenue per contact; lifts against the control
    and the holdout with intervals and p-values; a winner only when significant.

    The experiments are those of the rulesets given (--rulesets or $CLM_RULESETS); the
    exposures and conversions are counted from the database."""
    if not ruleset_paths:
        raise ClmError(
            "clm experiments report needs the rulesets that declare the experiments: "
            "pass --rulesets PATH (or set $CLM_RULESETS)"
        )
    with open_engine(db_path, rulesets=ruleset_paths) as engine:
        found = experiment_reports(engine, name)
    if as_json:
        print_json([r.to_json() for r in found])
        return
    if not found:
        console.print("no experiment is declared in these rulesets")
    for item in found:
        print_report(item)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _points(value: float) -> str:
    return f"{value * 100:+.2f}"


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def print_report(report: ExperimentReport) -> None:
    """One experiment as tables for people."""
    console.print(
        f"[bold]experiment {report.name}[/] ({report.ruleset} / {report.rule}); goal: "
        f"{report.goal}",
        soft_wrap=True,
    )
    arms = Table("arm", "role", "weight", "exposed", "converted", "rate", "revenue/contact")
    for arm in report.arms:
        role = "control" if arm.name == report.control else ""
        role = "holdout" if arm.name == report.holdout else role
        weight = report.weights.get(arm.name)
        arms.add_row(
            arm.name,
            role,
            "-" if weight is None else f"{weight:g}",
            f"{arm.exposed:,}",
            f"{arm.converted:,}",
            _pct(arm.rate),
            _money(arm.revenue_per_contact),
        )
    console.print(arms)
    for title, rows in (
        (f"against the control ({report.control})", report.vs_control),
        (f"against the holdout ({report.holdout})", report.vs_holdout),
    ):
        if not rows:
            continue
        table = Table(
            "arm",
            "lift (points)",
            "relative",
            "interval",
            "p-value",
            "tested at",
            "revenue/contact diff",
            title=title,
        )
        for c in rows:
            revenue = "-"
            if c.revenue_difference is not None:
                revenue = (
                    f"{_money(c.revenue_difference)} [{_money(c.revenue_low)}, "
                    f"{_money(c.revenue_high)}] p={c.revenue_p_value:.3g}"
                )
            table.add_row(
                c.arm + (" *" if c.significant else ""),
                _points(c.difference),
                "-" if c.relative is None else f"{c.relative * 100:+.1f}%",
                f"[{_points(c.low)}, {_points(c.high)}]",
                f"{c.p_value:.3g}",
                f"{c.level:.3g}",
                revenue,
            )
        console.print(table)
    console.print(f"method: {report.validity}", soft_wrap=True, markup=False)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    console.print(f"[bold]{report.verdict}[/]", soft_wrap=True)
    console.print()
