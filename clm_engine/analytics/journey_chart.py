"""The journey map drawn with Altair (Vega-Lite, rendered to SVG by vl-convert like every chart
of the report): the stages in model order as boxes, each ``stage.set`` rule an arc from the
stage it acts in to the stage it sets (forward above, backward below), its width the
transitions it made; a rule that names no stage it acts in drops into the stage it sets from
above; under each stage its touchpoints with their fires (and conversions, for a rule with a
goal), those of rules naming no stage in an "any stage" column on the left.

Layout is computed here, as data (positions of boxes, points of arcs, lines of text); drawing
is Vega-Lite's: no hand-written SVG.
"""

from __future__ import annotations

from typing import Any

import altair as alt

from .journey import ANY_STAGE

WIDTH, HEIGHT = 1060, 420
_ROW = 0.32  # height of one touchpoint line, in the chart's y units


def journey_chart(figures: dict[str, Any]) -> Any:
    """The journey map of ``figures["journey"]``; None when there are no stages to draw."""
    journey = figures.get("journey") or {}
    stages = journey.get("stages") or []
    if not stages:
        return None
    goals = {(g["ruleset"], g["rule"]): g for g in figures.get("goals", [])}
    moves = journey.get("moves", [])
    touchpoints = journey.get("touchpoints", [])
    anywhere = any(ANY_STAGE in t["stages"] for t in touchpoints)
    x_of = {s["stage"]: s["position"] + 1 for s in stages}
    if anywhere:
        x_of[ANY_STAGE] = 0
    nodes = [
        {
            "x": x_of[s["stage"]],
            "y": 0,
            "label": f"{s['stage']}\nreached {s['reached']:,}\nnow {s['contacts_now']:,}",
        }
        for s in stages
    ]
    if anywhere:
        nodes.append({"x": 0, "y": 0, "label": f"{ANY_STAGE}\n(rules naming\nno stage)"})
    arcs, arc_labels = _arcs(moves, x_of, goals)
    arc_top = max([1.0, *(p["y"] for p in arcs)])
    drops, drop_labels = _drops(moves, x_of, goals, arc_top + 0.35)
    arcs += drops
    arc_labels += drop_labels
    top = min([-0.9, *(p["y"] for p in arcs)]) - 0.45  # the first line, under the arcs
    lines = _touchpoint_lines(touchpoints, x_of, goals, top)
    low = min([-2.0, *(p["y"] for p in arcs), *(t["y"] - _ROW for t in lines)])
    high = max([1.0, *(p["y"] for p in arcs), *(t["y"] for t in arc_labels)]) + 0.4
    x = alt.X("x:Q", axis=None, scale=alt.Scale(domain=[-0.6, max(x_of.values()) + 0.6]))
    y = alt.Y("y:Q", axis=None, scale=alt.Scale(domain=[low, high]))
    layers = [
        _data(nodes)
        .mark_point(shape="square", size=5200, filled=True, color="#e8eef7", opacity=1)
        .encode(x=x, y=y),
        _data(nodes).mark_text(lineBreak="\n", fontSize=11).encode(x=x, y=y, text="label:N"),
    ]
    if arcs:
        layers.insert(
            0,
            _data(arcs)
            .mark_line(interpolate="basis", opacity=0.75)
            .encode(
                x=x,
                y=y,
                detail="arc:N",
                order="step:Q",
                color=alt.Color(
                    "direction:N",
                    scale=alt.Scale(
                        domain=["forward", "backward", "from any stage"],
                        range=["#4c78a8", "#e45756", "#9ecae9"],
                    ),
                    title="stage moves",
                ),
                strokeWidth=alt.StrokeWidth(
                    "transitions:Q", scale=alt.Scale(range=[1.5, 9]), legend=None
                ),
            ),
        )
        layers.append(
            _data(arc_labels)
            .mark_text(fontSize=10, color="#333", lineBreak="\n")
            .encode(x=x, y=y, text="label:N")
        )
    if lines:
        layers.append(
            _data(lines)
            .mark_text(fontSize=10, align="center", color="#555")
            .encode(x=x, y=y, text="label:N")
        )
    return (
        alt.layer(*layers)
        .properties(
            width=WIDTH,
            height=HEIGHT,
            title="Journey map: stages, the rules that move contacts, touchpoints at each stage",
        )
        .configure_view(stroke=None)
    )


def _data(rows: list[dict[str, Any]]) -> alt.Chart:
    return alt.Chart(alt.Data(values=rows))  # type: ignore[no-untyped-call]  # altair's signature


def _arcs(
    moves: list[dict[str, Any]], x_of: dict[str, int], goals: dict[tuple[str, str], Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Three points per arc (start, apex, end), forward above the boxes and backward below;
    arcs between the same two stages are stacked, each a little higher."""
    points: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    stacked: dict[tuple[int, int], int] = {}
    for move in moves:
        for source in move["from"]:
            if source == ANY_STAGE or source not in x_of or move["to"] not in x_of:
                continue  # (moves from any stage drop in from above: ``_drops``)
            if source == move["to"]:
                continue
            start, end = x_of[source], x_of[move["to"]]
            backward = end < start
            level = stacked.get((start, end), 0)
            stacked[(start, end)] = level + 1
            rise = 0.55 + 0.22 * abs(end - start) + 0.32 * level
            apex = -rise if backward else rise
            name = f"{move['ruleset']}/{move['rule']}/{source}"
            for step, (px, py) in enumerate(((start, 0.3), ((start + end) / 2, apex), (end, 0.3))):
                points.append(
                    {
                        "arc": name,
                        "step": step,
                        "x": px,
                        "y": -py if backward and step != 1 else py,
                        "direction": "backward" if backward else "forward",
                        "transitions": move["transitions"],
                    }
                )
            label = f"{move['rule']}: {move['transitions']:,} moved"
            goal = goals.get((move["ruleset"], move["rule"]))
            if goal is not None:
                label += f"\n{goal['converted']:,} converted"
            labels.append({"x": (start + end) / 2, "y": apex * 0.62, "label": label})
    return points, labels


def _drops(
    moves: list[dict[str, Any]], x_of: dict[str, int], goals: dict[tuple[str, str], Any], top: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The moves of rules that name no stage they act in: a line dropping into the stage they
    set, its rules' labels stacked above it."""
    points: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    stacked: dict[int, int] = {}
    for move in moves:
        if ANY_STAGE not in move["from"] or move["to"] not in x_of:
            continue
        x = x_of[move["to"]]
        row = stacked.get(x, 0)
        stacked[x] = row + 1
        label = f"{move['rule']}: {move['transitions']:,} moved"
        goal = goals.get((move["ruleset"], move["rule"]))
        if goal is not None:
            label += f", {goal['converted']:,} converted"
        labels.append({"x": x, "y": top + _ROW * row, "label": label})
        if row == 0:
            name = f"{move['ruleset']}/{move['rule']}/drop"
            for step, y in enumerate((top - 0.15, 0.3)):
                points.append(
                    {
                        "arc": name,
                        "step": step,
                        "x": x,
                        "y": y,
                        "direction": "from any stage",
                        "transitions": sum(
                            m["transitions"]
                            for m in moves
                            if m["to"] == move["to"] and ANY_STAGE in m["from"]
                        ),
                    }
                )
    return points, labels


def _touchpoint_lines(
    touchpoints: list[dict[str, Any]],
    x_of: dict[str, int],
    goals: dict[tuple[str, str], Any],
    top: float,
) -> list[dict[str, Any]]:
    """One line of text per touchpoint and stage, stacked under the stage's box."""
    rows: dict[int, int] = {}
    lines = []
    for point in touchpoints:
        for stage in point["stages"]:
            if stage not in x_of:
                continue
            x = x_of[stage]
            row = rows.get(x, 0)
            rows[x] = row + 1
            what = f" {point['what']}" if point["what"] else ""
            text = f"{point['rule']}: {point['action']}{what}, {point['fires']:,} sent"
            goal = goals.get((point["ruleset"], point["rule"]))
            if goal is not None:
                text += f", {goal['converted']:,} conv."
            lines.append({"x": x, "y": top - _ROW * row, "label": text})
    return lines
