"""The experiments' section of ``clm report --html``: per experiment a table of arms and of
comparisons, the verdict and the method's validity, as plain escaped HTML (no script)."""

from __future__ import annotations

import html
from typing import Any


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _relative(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f}%"


def _points(value: float) -> str:
    return f"{value * 100:+.2f}"


def experiments_section(figures: dict[str, Any]) -> str:
    """The section for ``figures["experiments"]`` (report JSONs); empty without any."""
    reports = figures.get("experiments") or []
    if not reports:
        return ""
    e = html.escape
    parts = ['<section id="experiments"><h2>Experiments</h2>']
    for report in reports:
        parts.append(
            f"<h3>{e(report['experiment'])}</h3><p>{e(report['ruleset'])} / {e(report['rule'])};"
            f" goal: {e(report['goal'])}</p>"
        )
        rows = "".join(
            f"<tr><td>{e(a['arm'])}</td><td>{'holdout' if a['holdout'] else ''}"
            f"{'control' if a['arm'] == report['control'] else ''}</td>"
            f"<td>{a['exposed']:,}</td><td>{a['converted']:,}</td><td>{_pct(a['rate'])}</td>"
            f"<td>{_money(a['revenue_per_contact'])}"
            "</td></tr>"
            for a in report["arms"]
        )
        parts.append(
            "<table><tr><th>arm</th><th>role</th><th>exposed</th><th>converted</th>"
            f"<th>rate</th><th>revenue/contact</th></tr>{rows}</table>"
        )
        for key, title in (
            ("vs_control", "against the control"),
            ("vs_holdout", "against the holdout"),
        ):
            if not report[key]:
                continue
            rows = "".join(
                f"<tr><td>{e(c['arm'])}</td><td>{e(c['baseline'])}</td>"
                f"<td>{_points(c['difference'])}</td>"
                f"<td>{_relative(c['relative'])}</td>"
                f"<td>[{_points(c['interval'][0])}, {_points(c['interval'][1])}]</td>"
                f"<td>{c['p_value']:.3g}</td><td>{'yes' if c['significant'] else 'no'}</td></tr>"
                for c in report[key]
            )
            parts.append(
                f"<table><caption>{title} (lift in points)</caption><tr><th>arm</th>"
                "<th>baseline</th><th>lift</th><th>relative</th><th>interval</th>"
                f"<th>p-value</th><th>significant</th></tr>{rows}</table>"
            )
        notes = [report["validity"], *report["warnings"]]
        parts.append("".join(f'<p class="note">{e(n)}</p>' for n in notes))
        parts.append(f'<p class="verdict"><b>{e(report["verdict"])}</b></p>')
    parts.append("</section>")
    return "\n".join(parts)
