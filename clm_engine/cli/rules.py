"""``clm explain``, ``clm check`` and ``clm dispatch``: rules at work, and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

import click
from rich.markup import escape
from rich.tree import Tree

from .. import explain as explaining
from ..errors import ClmError
from . import cli
from .common import (
    console,
    db_option,
    json_option,
    open_engine,
    print_dispatch,
    print_json,
    rulesets_option,
)

_DECISION_STYLE = {
    "fired": "[green]fired[/]",
    "no_match": "[yellow]did not match[/]",
    "blocked_by_limit": "[magenta]blocked by limit[/]",
    "error": "[red]evaluation failed[/]",
}
_STATUS_STYLE = {
    "done": "green",
    "pending": "cyan",
    "skipped": "yellow",
    "vetoed": "magenta",
    "dead": "red",
    "failed": "red",
    "simulated": "dim",
}


@cli.command()
@click.argument("contact_id")
@click.option("--rule", help="Only this rule.")
@click.option("--ruleset", help="Only the rules of this ruleset.")
@click.option("--limit", default=5, show_default=True, help="Decisions to show per rule.")
@db_option
@rulesets_option
@json_option
def explain(
    contact_id: str,
    rule: str | None,
    ruleset: str | None,
    limit: int,
    db_path: Path,
    ruleset_paths: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Why a contact did or did not get what each rule does.

    Shows, per rule, every recorded decision: the trigger, each condition with the value it saw
    and its result, limits, and what became of the actions (done, pending, vetoed ...). A rule
    never evaluated says why (its trigger never came, it is disabled ...).
    """
    with open_engine(db_path, rulesets=ruleset_paths) as engine:
        answer = explaining.explain(engine, contact_id, rule=rule, ruleset=ruleset, limit=limit)
    if as_json:
        print_json(answer)
        return
    # Everything from data (ids, values, notes, regexes like ^[a-z0-9.]+@) is escaped: rich
    # would take "[a-z0-9.]" for markup and drop it.
    root = Tree(f"[bold]{esc(answer['contact'])}[/]  stage: [bold]{esc(answer['stage'])}[/]")
    for entry in answer["rules"]:
        title = (
            f"[bold]{esc(entry['rule'])}[/] [dim]({esc(entry['ruleset'])}; "
            f"{esc(entry['trigger'])})[/]"
        )
        node = root.add(title)
        if entry.get("description"):
            node.add(f"[dim]{esc(entry['description'])}[/]")
        if entry.get("not_evaluated"):
            node.add(esc(entry["not_evaluated"]))
        if entry.get("next") and entry.get("decisions"):
            node.add(esc(entry["next"]))
        for decision in entry["decisions"]:
            label = _DECISION_STYLE.get(decision["decision"], decision["decision"])
            item = node.add(
                f"{decision['at']}  {label}  [dim]on {esc(decision['trigger'])} "
                f"(v{decision['version']} {decision['content_hash']})[/]"
            )
            if decision["detail"]:
                item.add(esc(decision["detail"]))
            if decision["conditions"] is not None:
                _conditions(item.add("conditions"), decision["conditions"])
            for action in decision["actions"]:
                added = item.add(_action_text(action))
                _history(added, action)
                for follow_up in action.get("follow_ups", ()):
                    then = added.add(f"then {_action_text(follow_up)} [dim]{_when(follow_up)}[/]")
                    _history(then, follow_up)
    if answer.get("health"):
        _health(root, answer["health"])
    console.print(root)


def _when(action: dict[str, Any]) -> str:
    """A finished action's finish time, else its due time."""
    if action.get("finished_at"):
        return f"finished {action['finished_at']}"
    return f"due {action.get('due_at', '?')}"


def _history(node: Tree, action: dict[str, Any]) -> None:
    """An action's history (queued, deferred ... sent), one line a step, when there is more
    to it than being queued."""
    history = action.get("history") or []
    if len(history) < 2 and action.get("status") == "pending":
        return
    for entry in history:
        text = f"[dim]{esc(entry['at'] or '?')}[/] {esc(entry['event'])}"
        if entry.get("until"):
            text += f" until {esc(entry['until'])}"
        if entry.get("note"):
            text += f" [dim]({esc(entry['note'])})[/]"
        node.add(text)


def _health(root: Tree, health: dict[str, Any]) -> None:
    """The health score and its parts (``contact.health.score``)."""
    score = "-" if health["score"] is None else f"{health['score']:g}"
    node = root.add(
        f"[bold]health score {score}[/] [dim](contact.health.score, definition "
        f"{esc(health['definition'])}, events from {health['window']['from'][:10]})[/]"
    )
    for part in health["parts"]:
        shown = "no data: left out" if part["score"] is None else f"{part['score']:g}"
        node.add(
            f"{esc(part['name'])}: {shown} [dim](weight {part['weight']:g}; "
            f"{esc(part['measure'])} {esc('none' if part['value'] is None else part['value'])})[/]"
        )


def esc(value: Any) -> str:
    """Text from data, shown as it is (rich markup in it escaped)."""
    return escape("" if value is None else str(value))


def _action_text(action: dict[str, Any]) -> str:
    style = _STATUS_STYLE.get(action["status"], "white")
    text = (
        f"{esc(action.get('action', '?'))} {esc(json.dumps(action.get('params', {})))} "
        f"[{style}]{esc(action['status'])}[/]"
    )
    if action.get("note"):
        text += f" [dim]({esc(action['note'])})[/]"
    return text


def _conditions(node: Tree, trace: dict[str, Any]) -> None:
    """Draw a condition trace: each group and leaf with what it saw and its result."""
    mark = "[green]✓[/]" if trace.get("result") else "[red]✗[/]"
    for group in ("all", "any"):
        if group in trace:
            child = node.add(f"{mark} {group}")
            for item in trace[group]:
                _conditions(child, item)
            return
    if "not" in trace:
        _conditions(node.add(f"{mark} not"), trace["not"])
        return
    if "error" in trace and "op" not in trace:
        node.add(f"[red]✗ {esc(trace['error'])}[/]")
        return
    segment = trace.get("segment")
    if trace.get("op") == "in_segment":
        # A segment is a named condition: show what it saw, not the null of a fact it lacks.
        child = node.add(f"{mark} in segment {esc(json.dumps(trace.get('value')))}")
        if isinstance(segment, dict) and segment.get("trace"):
            _conditions(child, segment["trace"])
        return
    seen = "missing" if trace.get("missing") else json.dumps(trace.get("actual"), default=str)
    value = trace.get("value")
    shown = json.dumps(value, default=str)
    if trace.get("value_fact"):
        shown = f"{trace['value_fact']} (= {shown})"
    text = (
        f"{mark} {esc(trace.get('fact') or '')} {esc(str(trace.get('op')))} {esc(shown)}  "
        f"[dim]saw {esc(seen)}[/]"
    )
    if trace.get("note"):
        text += f" [dim]({esc(trace['note'])})[/]"
    node.add(text)


@cli.command()
@click.argument("ruleset", required=False)
@click.option("--contact", "contact_id", help="The contact to judge.")
@click.option(
    "--contacts", "contacts_file", type=click.File("r"), help="A file of contact ids, one per line."
)
@db_option
@rulesets_option
@json_option
def check(
    ruleset: str | None,
    contact_id: str | None,
    contacts_file: IO[str] | None,
    db_path: Path,
    ruleset_paths: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Dry run: what each rule (of RULESET, or all) would do for contacts now. Writes nothing."""
    if not ruleset_paths:
        raise ClmError("no rulesets to check: pass --rulesets PATH (or set CLM_RULESETS)")
    ids = [contact_id] if contact_id else []
    if contacts_file:
        ids += [line.strip() for line in contacts_file if line.strip()]
    if not ids:
        raise ClmError("say which contacts: --contact ID or --contacts FILE")
    with open_engine(db_path, rulesets=ruleset_paths) as engine:
        answers = [explaining.check(engine, cid, ruleset=ruleset) for cid in ids]
    if as_json:
        print_json(answers if len(answers) > 1 else answers[0])
        return
    if len(answers) == 1:
        first = answers[0]
        root = Tree(f"[bold]{esc(first['contact'])}[/]  stage: {esc(first['stage'])}  (dry run)")
        for result in first["rules"]:
            verdict = "[green]would fire[/]" if result["would_fire"] else "[yellow]would not[/]"
            node = root.add(
                f"{verdict} [bold]{esc(result['rule'])}[/] [dim]({esc(result['ruleset'])})[/]: "
                f"{esc(result['why'])}"
            )
            if result.get("conditions"):
                _conditions(node, result["conditions"])
            for action in result.get("actions", []):
                node.add(f"-> {esc(action)}")
        console.print(root)
        return
    counts: dict[str, int] = {}
    for answer in answers:
        for result in answer["rules"]:
            counts.setdefault(result["rule"], 0)
            counts[result["rule"]] += bool(result["would_fire"])
    console.print(f"dry run over {len(answers):,} contacts:")
    for name, count in counts.items():
        console.print(f"  {esc(name)}: would fire for {count:,}")


@cli.command()
@click.option("--limit", type=click.IntRange(1), help="Stop after this many actions.")
@db_option
@rulesets_option
@json_option
def dispatch(
    limit: int | None, db_path: Path, ruleset_paths: tuple[Path, ...], as_json: bool
) -> None:
    """Run every action that is due now, once, and say what happened."""
    with open_engine(db_path, rulesets=ruleset_paths) as engine:
        report = engine.dispatch(limit=limit)
    if as_json:
        print_json(report.as_dict())
        return
    print_dispatch(report)
