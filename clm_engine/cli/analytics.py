"""``clm analytics refresh`` and ``clm analytics validate``: predictive CLV and RFM segments."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..analytics.definitions import load_definitions
from ..analytics.figures import kpis
from ..analytics.health import KIND as HEALTH
from ..analytics.health import definition_in, load_health
from ..analytics.spend import load_spend
from ..engine import Engine
from ..errors import ClmError
from ..store.analytics_dialect import analytics_db
from . import cli
from .common import console, db_option, json_option, open_engine, print_json, rulesets_option

definitions_option = click.option(
    "--definitions",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="RFM segment definitions (JSON); the shipped default without it.",
)


@cli.group()
def analytics() -> None:
    """Lifecycle analytics: predictive CLV (BG/NBD, Gamma-Gamma) and RFM segments."""


@analytics.command("refresh")
@db_option
@rulesets_option
@definitions_option
@click.option(
    "--as-of",
    help="Refresh as of this UTC time or date (now without it): complete days before it count.",
)
@json_option
def refresh_(
    db_path: Path,
    ruleset_paths: tuple[Path, ...],
    definitions: Path | None,
    as_of: str | None,
    as_json: bool,
) -> None:
    """Fit BG/NBD and Gamma-Gamma, predict every customer (p_alive, expected purchases,
    predicted CLV) and score RFM; each change of segment becomes an ``rfm.segment_changed``
    event, judged by the rulesets given."""
    rules = load_definitions(definitions)
    now = None
    if as_of is not None:
        try:
            now = datetime.fromisoformat(as_of.replace("Z", "+00:00"))
        except ValueError:
            raise ClmError(f"--as-of {as_of!r} is not a date or time like 2026-11-02") from None
        now = now if now.tzinfo else now.replace(tzinfo=UTC)
    from ..analytics.sweep import refresh  # numpy and scipy load for this command only

    with open_engine(db_path, rulesets=ruleset_paths) as engine:
        result = refresh(engine, now=now, definitions=rules)
    if as_json:
        print_json(result.as_dict())
        return
    console.print(f"calibrated through {result.calibration_end}: {result.customers:,} customers")
    for problem in result.problems:
        console.print(f"[yellow]not fitted:[/] {problem}")
    if result.bgnbd:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in result.bgnbd.items())
        console.print(f"BG/NBD: {shown}")
    if result.gamma_gamma:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in result.gamma_gamma.items())
        console.print(f"Gamma-Gamma: {shown}")
    table = Table("segment", "customers", title="RFM segments", title_justify="left")
    for name, count in result.segments.items():
        table.add_row(name, f"{count:,}")
    console.print(table)
    console.print(f"{result.segment_changes:,} segment change(s) recorded")


@analytics.command("validate")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def validate_(path: Path) -> None:
    """Check an RFM segment definitions file or a health score definition (a document with
    a "health" key): every problem with its line and JSON pointer."""
    if _is_health(path):
        health = load_health(path)
        parts = ", ".join(f"{p.name} x {p.weight:g}" for p in health.parts)
        console.print(f"{path}: health {health.health!r}, window {health.window}: {parts}")
        return
    definitions = load_definitions(path)
    console.print(
        f"{path}: {len(definitions.segments)} segment rule(s), window {definitions.window}"
    )


def _is_health(path: Path) -> bool:
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (OSError, ValueError):
        return False  # the RFM loader reports what is wrong with it
    return isinstance(data, dict) and HEALTH in data


# -- the analytics part of ``clm report`` ------------------------------------------------------


def report_figures(
    engine: Engine, ruleset_paths: tuple[Path, ...], *, spend: Path | None = None
) -> dict[str, Any]:
    """The KPIs for ``clm report``, for the stage model of ``ruleset_paths`` (the default
    model without them), on either store; rulesets are only read, not loaded. ``spend``: an
    acquisition spend file (CSV) besides the ``marketing.spend`` events."""
    stages, book = engine.stages, engine.rulebook
    if ruleset_paths:
        book = engine.prepare_rulesets(list(ruleset_paths)).book
        stages = book.stages
    spent = load_spend(spend) if spend is not None else None
    figures = kpis(
        analytics_db(engine.store),
        now=engine.clock.now(),
        stages=stages,
        spend=spent,
        rulesets=[loaded.ruleset for loaded in book.rulesets],
        health=definition_in(book.documents),
    )
    if ruleset_paths:  # the experiments they declare, counted from the store
        from ..experiments import KIND
        from ..experiments.report import reports

        compilers = {key: rule.compiler for key, rule in book.rules.items()}
        found = reports(engine.store, dict(book.documents.get(KIND, {})), compilers)
        figures["experiments"] = [r.to_json() for r in found]
    return figures


def write_html(path: Path, figures: dict[str, Any], *, title: str) -> None:
    from ..analytics.html import render  # charting libraries load only for --html

    path.write_text(render(figures, title=title), encoding="utf-8")


def print_figures(figures: dict[str, Any]) -> None:
    """The KPIs as tables for people."""
    table = Table(
        "stage",
        "reached",
        "conversion",
        "drop-off",
        "median days",
        "backward in",
        title="stage funnel",
        title_justify="left",
    )
    for row in figures["funnel"]:
        table.add_row(
            row["stage"],
            f"{row['reached']:,}",
            _pct(row["conversion"]),
            _pct(row["drop_off"]),
            _num(row["median_days_in_stage"]),
            f"{row['backward_moves_in']:,}",
        )
    console.print(table)
    p = figures["purchases"]
    kpi = Table("", "", title="KPIs", title_justify="left", show_header=False)
    for label, value in (
        ("repeat purchase rate", _pct(p["repeat_purchase_rate"])),
        ("average order value", _num(p["average_order_value"])),
        ("yearly retention", _pct(p["yearly_retention"])),
        ("CLV (guide formula)", _num(p["clv"])),
        ("predicted CLV, mean", _num(figures["predictive"]["predicted_clv_mean"])),
        ("activation rate", _pct(figures["activation"]["activation_rate"])),
        ("referral rate", _pct(figures["referral"]["referral_rate"])),
    ):
        kpi.add_row(label, value)
    console.print(kpi)
    if figures["nps_by_month"]:
        nps = Table("month", "answers", "NPS", title="NPS", title_justify="left")
        for m in figures["nps_by_month"][-12:]:
            nps.add_row(m["month"], f"{m['answers']:,}", f"{m['nps']:.1f}")
        console.print(nps)
    if figures["csat_by_month"]:
        csat = Table("month", "answers", "satisfied", "CSAT", title="CSAT", title_justify="left")
        for m in figures["csat_by_month"][-12:]:
            csat.add_row(m["month"], f"{m['answers']:,}", f"{m['satisfied']:,}", f"{m['csat']:.1f}")
        console.print(csat)
    if figures["acquisition"]["channels"]:
        acq = Table(
            "channel",
            "spend",
            "customers",
            "CAC",
            "ROMI",
            title="acquisition",
            title_justify="left",
        )
        for a in [*figures["acquisition"]["channels"], figures["acquisition"]["total"]]:
            acq.add_row(
                a["channel"] or "all channels",
                _num(a["spend"]),
                f"{a['customers']:,}",
                _num(a["cac"]),
                _pct(a["romi"]),
            )
        console.print(acq)
    health = figures["health"]
    if health["contacts"]:
        parts = ", ".join(f"{p['name']} {_num(p['mean'])}" for p in health["parts"])
        console.print(
            f"health score ({health['definition']}, {health['window']}): mean "
            f"{_num(health['mean'])} over {health['contacts']:,} contacts; parts: {parts}"
        )
    for goal in figures["goals"]:
        console.print(
            f"goal of {goal['ruleset']}/{goal['rule']} ({goal['goal']}): "
            f"{goal['converted']:,} of {goal['exposed']:,} converted "
            f"({_pct(goal['conversion_rate'])}), revenue {_num(goal['revenue'])}"
        )
    if figures["rfm"]["segments"]:
        console.print(
            "RFM segments: "
            + ", ".join(f"{k} {v:,}" for k, v in figures["rfm"]["segments"].items())
        )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"
