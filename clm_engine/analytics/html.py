"""``clm report --html``: one self-contained page of charts that works offline.

Charts are Vega-Lite specifications built with Altair and rendered to SVG by vl-convert (the
Vega renderer compiled into a Python extension, no browser, no network): the page inlines each
SVG, with its styles, and no script at all. A Content-Security-Policy that allows nothing but
inline styles and ``data:`` images makes any request the page might try fail instead of
leaving the machine.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import altair as alt
import vl_convert

from ..experiments.html import experiments_section

#: Width of each chart, in CSS pixels.
WIDTH = 520


def _chart(values: list[dict[str, Any]]) -> alt.Chart:
    data = alt.Data(values=values)  # type: ignore[no-untyped-call]  # altair's own signature
    return alt.Chart(data).properties(width=WIDTH, height=220)


def funnel_chart(figures: dict[str, Any]) -> Any:
    rows = [
        {"stage": r["stage"], "reached": r["reached"], "order": i}
        for i, r in enumerate(figures["funnel"])
    ]
    if not rows:
        return None
    order = [r["stage"] for r in rows]
    bars = (
        _chart(rows)
        .mark_bar(color="#4c78a8")
        .encode(
            y=alt.Y("stage:N", sort=order, title=None),
            x=alt.X("reached:Q", title="contacts reaching the stage"),
        )
    )
    labels = bars.mark_text(align="left", dx=3).encode(text="reached:Q")
    return (bars + labels).properties(title="Stage funnel")


def flows_chart(figures: dict[str, Any]) -> Any:
    rows = figures["stage_flows"]
    if not rows:
        return None
    order = [r["stage"] for r in figures["funnel"]]
    base = _chart(rows).encode(
        x=alt.X("to:N", sort=order, title="to stage"),
        y=alt.Y("from:N", sort=order, title="from stage"),
    )
    return (
        base.mark_rect().encode(color=alt.Color("transitions:Q", scale=alt.Scale(scheme="blues")))
        + base.mark_text().encode(text="transitions:Q")
    ).properties(title="Stage flows (transitions)")


def cohort_chart(figures: dict[str, Any]) -> Any:
    rows = [
        {"cohort": c["cohort"], "month": k, "retention": rate}
        for c in figures["cohorts"]
        for k, rate in enumerate(c["retention"])
    ]
    if not rows:
        return None
    base = _chart(rows).encode(
        x=alt.X("month:O", title="months since signup"),
        y=alt.Y("cohort:O", title="signup month"),
    )
    return (
        base.mark_rect().encode(
            color=alt.Color("retention:Q", scale=alt.Scale(domain=[0, 1], scheme="greens"))
        )
        + base.mark_text(fontSize=9).encode(text=alt.Text("retention:Q", format=".0%"))
    ).properties(title="Cohort retention")


def trend_chart(figures: dict[str, Any]) -> Any:
    rows = [
        {"month": m["month"], "value": m["nps"], "series": "NPS"} for m in figures["nps_by_month"]
    ]
    rows += [
        {"month": m["month"], "value": m["csat"], "series": "CSAT"}
        for m in figures.get("csat_by_month", [])
    ]
    rows += [
        {"month": m["month"], "value": round(100 * (m["churn_rate"] or 0), 1), "series": "churn %"}
        for m in figures["churn_by_month"]
    ]
    if not rows:
        return None
    return (
        _chart(rows)
        .mark_line(point=True)
        .encode(
            x=alt.X("month:O", title="month"),
            y=alt.Y("value:Q", title="NPS / CSAT / monthly churn %"),
            color=alt.Color("series:N", title=None),
        )
        .properties(title="NPS and churn over time")
    )


def rfm_chart(figures: dict[str, Any]) -> Any:
    rows = figures["rfm"]["grid"]
    if not rows:
        return None
    base = _chart(rows).encode(
        x=alt.X("f:O", title="frequency score"),
        y=alt.Y("r:O", sort="descending", title="recency score"),
    )
    return (
        base.mark_rect().encode(color=alt.Color("customers:Q", scale=alt.Scale(scheme="oranges")))
        + base.mark_text().encode(text="customers:Q")
    ).properties(title="RFM grid (customers)")


def clv_chart(figures: dict[str, Any]) -> Any:
    rows = figures["predictive"]["predicted_clv_histogram"]
    if not any(r["customers"] for r in rows):
        return None
    return (
        _chart(rows)
        .mark_bar(color="#54a24b")
        .encode(
            x=alt.X("from:Q", bin="binned", title="predicted CLV (12 months)"),
            x2="to:Q",
            y=alt.Y("customers:Q", title="customers"),
        )
        .properties(title="Predicted CLV distribution")
    )


def fires_chart(figures: dict[str, Any]) -> Any:
    rows = figures["rule_fires_by_week"]
    if not rows:
        return None
    return (
        _chart(rows)
        .mark_bar()
        .encode(
            x=alt.X("week:O", title="week"),
            y=alt.Y("fires:Q", title="fires"),
            color=alt.Color("rule:N", title="rule"),
        )
        .properties(title="Rule fires by week")
    )


CHARTS: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
    ("funnel", funnel_chart),
    ("stage-flows", flows_chart),
    ("cohorts", cohort_chart),
    ("nps-churn", trend_chart),
    ("rfm", rfm_chart),
    ("clv", clv_chart),
    ("rule-fires", fires_chart),
)

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } table { border-collapse: collapse; margin-bottom: 1.5em; }
td, th { padding: 2px 10px; border-bottom: 1px solid #ddd; text-align: left; }
.charts { display: flex; flex-wrap: wrap; gap: 24px; }
figure { margin: 0; } figcaption { color: #666; font-size: 12px; }
.empty { color: #999; }
"""


def render(figures: dict[str, Any], *, title: str) -> str:
    """The whole page for ``figures`` (what :func:`clm_engine.analytics.figures.kpis` returns)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        _headline(figures),
        '<div class="charts">',
    ]
    for name, build in CHARTS:
        chart = build(figures)
        if chart is None:
            parts.append(
                f'<figure class="chart empty" id="{name}"><figcaption>{name}: no data yet'
                "</figcaption></figure>"
            )
            continue
        svg = vl_convert.vegalite_to_svg(chart.to_dict())
        parts.append(f'<figure class="chart" id="{name}">{svg}</figure>')
    parts.append("</div>")
    parts.append(journey_section(figures))
    parts.append(experiments_section(figures))  # clm_engine/experiments/html.py
    parts.append("</body></html>")
    return "\n".join(parts)


def journey_section(figures: dict[str, Any]) -> str:
    """The journey map (``clm_engine.analytics.journey_chart``) and the conversions and
    revenue attributed to each rule with a goal."""
    from .journey_chart import journey_chart

    chart = journey_chart(figures)
    if chart is None:
        drawn = (
            '<figure class="chart empty" id="journey"><figcaption>journey: no stages'
            "</figcaption></figure>"
        )
    else:
        svg = vl_convert.vegalite_to_svg(chart.to_dict())
        drawn = f'<figure class="chart" id="journey">{svg}</figure>'
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(cell))}</td>"
            for cell in (
                f"{g['ruleset']}/{g['rule']}",
                g["goal"],
                f"{g['exposed']:,}",
                f"{g['converted']:,}",
                _percent(g["conversion_rate"]),
                _number(g["revenue"]),
            )
        )
        + "</tr>"
        for g in figures.get("goals", [])
    )
    table = (
        '<table id="goals"><tr><th>rule</th><th>goal</th><th>exposed</th><th>converted</th>'
        f"<th>conversion</th><th>revenue</th></tr>{rows}</table>"
        if rows
        else ""
    )
    return f'<section class="journey"><h2>Journey</h2>{drawn}{table}</section>'


def _headline(figures: dict[str, Any]) -> str:
    p = figures["purchases"]
    predictive = figures["predictive"]
    rows = [
        ("as of", figures["as_of"][:10]),
        ("customers", f"{p['customers']:,}"),
        ("repeat purchase rate", _percent(p["repeat_purchase_rate"])),
        ("average order value", _number(p["average_order_value"])),
        ("CLV (guide formula)", _number(p["clv"])),
        ("predicted CLV, mean (12 months)", _number(predictive["predicted_clv_mean"])),
        ("activation rate", _percent(figures["activation"]["activation_rate"])),
        ("referral rate", _percent(figures["referral"]["referral_rate"])),
    ]
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"
