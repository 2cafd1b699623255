"""``clm simulate``: a backtest of rulesets over an event history, or two versions compared.

The command is for the question an ops person asks before shipping a ruleset change: "what
would this do?". It replays a history on a virtual clock in a scratch store (see
``clm_engine.simulation``), sends nothing, and prints per rule how often it fired, for how many
contacts, week by week; with ``--compare``, what changes between two versions and for whom.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import ClmError, RulesetError
from ..experiments.rollout import parse_rollout, rollout_copies
from ..rulesets.problems import RulesetValidationError
from ..simulation import (
    Comparison,
    EventHistory,
    SimulationResult,
    compare,
    parse_step,
    parse_when,
    read_events,
)
from ..simulation import simulate as run_simulation
from ..simulation.window import Window
from . import cli
from .common import console, errors, json_option, print_json, registry_of

#: Contact ids printed per list in a comparison (``--json`` gives them all).
SHOW_IDS = 10
#: Tables are as wide as they need (up to this) when the output is a file, not a terminal.
FILE_WIDTH = 240


@cli.command()
@click.option(
    "--rulesets",
    "ruleset_paths",
    multiple=True,
    envvar="CLM_RULESETS",
    metavar="PATH",
    help="Ruleset files or directories to simulate (repeatable; or $CLM_RULESETS).",
)
@click.option(
    "--compare",
    "compare_dirs",
    nargs=2,
    metavar="OLD NEW",
    help="Simulate two versions of the rulesets (files or directories) and show what changes.",
)
@click.option(
    "--rollout",
    "rollout",
    metavar="EXPERIMENT=ARM",
    help="With --rulesets: compare rolling ARM out to everyone with keeping everyone in the "
    "experiment's control (docs/experiments.md).",
)
@click.option(
    "--events",
    "events_path",
    required=True,
    metavar="FILE",
    help="The history: JSON Lines, one event per line, as `clm ingest` reads.",
)
@click.option(
    "--from",
    "start_text",
    required=True,
    metavar="DATE",
    help="Start (2026-05-01, or an ISO time).",
)
@click.option(
    "--to", "end_text", required=True, metavar="DATE", help="End, excluded (2026-06-01, or a time)."
)
@click.option(
    "--db",
    "db_path",
    metavar="PATH|URL",
    help=(
        "Start from a copy of this store, a SQLite file or a postgresql:// URL (it is never "
        "changed); default: an empty store."
    ),
)
@click.option(
    "--step",
    "step_text",
    default="1h",
    metavar="DURATION",
    show_default=True,
    help="How often the virtual clock ticks: 15m, 1h, 1d.",
)
@click.option(
    "--keep",
    "keep_dir",
    metavar="DIR",
    help="Keep the scratch store(s) in this directory, for clm explain / clm report.",
)
@click.option(
    "--allow-failures",
    is_flag=True,
    help="Exit 0 even when actions failed (by default failed or dead actions make it exit 1).",
)
@json_option
def simulate(
    ruleset_paths: tuple[str, ...],
    compare_dirs: tuple[str, str] | None,
    rollout: str | None,
    events_path: str,
    start_text: str,
    end_text: str,
    db_path: str | None,
    step_text: str,
    keep_dir: str | None,
    allow_failures: bool,
    as_json: bool,
) -> None:
    """Backtest rulesets over an event history, on a virtual clock. Sends nothing.

    Replays the events between --from and --to in time order in a scratch store, running
    every delay, date rule and schedule on the way, and shows per rule how often it fired and
    for how many contacts, by ISO week. External actions (emails ...) are recorded, never run;
    the store given with --db is copied, never changed.

    With --compare OLD NEW, both versions run over the same history and the output shows, per
    rule, the fires before and after, week by week, and which contacts would be treated
    differently. Exits 1 when the input had lines that are not events, and when actions
    failed (a template that does not render, an action that raised until it was set aside
    as dead) unless --allow-failures is given.
    """
    ctx = click.get_current_context()
    from_env = ctx.get_parameter_source("ruleset_paths") == ParameterSource.ENVIRONMENT
    if compare_dirs and ruleset_paths and not from_env:
        raise ClmError("give either --rulesets or --compare OLD NEW, not both")
    if not compare_dirs and not ruleset_paths:
        raise ClmError("nothing to simulate: pass --rulesets PATH, or --compare OLD NEW")
    start = parse_when(start_text, name="--from")
    end = parse_when(end_text, name="--to")
    if start >= end:
        raise ClmError(f"--from {start_text} must be before --to {end_text}")
    step = parse_step(step_text)
    window: Window = {"start": start, "end": end, "db": db_path, "step": step, "keep": keep_dir}
    show = not as_json and errors.is_terminal
    if rollout is not None:
        if compare_dirs or not ruleset_paths:
            raise ClmError("--rollout EXPERIMENT=ARM goes with --rulesets, not --compare")
        name, arm = parse_rollout(rollout)
        scratch = tempfile.TemporaryDirectory(prefix="clm-rollout-")
        ctx.call_on_close(scratch.cleanup)
        control_dir, arm_dir = rollout_copies(ruleset_paths, name, arm, Path(scratch.name))
        compare_dirs = (str(control_dir), str(arm_dir))
        labels = (f"{name}: everyone in the control", f"{name}: everyone in {arm}")
    else:
        labels = compare_dirs or ("", "")
    # Read (and sorted on disk) when the rulesets have been validated; its files removed after.
    with read_events(Path(events_path)) as history:
        if compare_dirs:
            old, new = compare_dirs
            with _progress(show, start, end, ("old", "new")) as report:
                comparison = _ruleset_errors(
                    lambda: compare(
                        old, new, history, **window, progress=report, registry=registry_of()
                    )
                )
            if as_json:
                print_json(comparison.as_dict())
            else:
                _print_comparison(comparison, *labels)
                if rollout is not None:  # what each side's arms received, side by side
                    _print_experiments(comparison.old.experiments, labels[0])
                    _print_experiments(comparison.new.experiments, labels[1])
            failures = [comparison.old.actions, comparison.new.actions]
        else:
            with _progress(show, start, end, ("simulating",)) as report:
                result = _ruleset_errors(
                    lambda: run_simulation(
                        list(ruleset_paths),
                        history,
                        **window,
                        progress=lambda at: report("simulating", at),
                        registry=registry_of(),
                    )
                )
            if as_json:
                print_json(result.as_dict())
            else:
                _print_result(result, ruleset_paths)
            failures = [result.actions]
        _exit_on_rejected(history)
        if not allow_failures:
            _exit_on_failures(failures)


#: Final statuses of actions that did not work: a simulation with any of them exits 1.
FAILED_STATUSES = ("failed", "dead")


def _exit_on_failures(actions: list[dict[str, int]]) -> None:
    """Failed or dead actions make the run exit 1, after the report (--allow-failures: 0)."""
    counts = Counter[str]()
    for side in actions:
        for status in FAILED_STATUSES:
            counts[status] += side.get(status, 0)
    total = sum(counts.values())
    if not total:
        return
    shown = ", ".join(f"{n:,} {status}" for status, n in counts.items() if n)
    errors.print(
        f"{total:,} action{'s' if total != 1 else ''} did not work ({shown}): clm explain "
        "(with --keep) shows why; --allow-failures accepts them",
        markup=False,
    )
    sys.exit(1)


def _ruleset_errors(run: Callable[[], Any]) -> Any:
    """Invalid rulesets as one line: how many problems, the first, and where to see them all."""
    try:
        return run()
    except RulesetError as error:
        if not isinstance(error, RulesetValidationError) or not error.problems:
            raise ClmError(str(error).splitlines()[0]) from None
        problems = error.problems
        files = sorted({p.file for p in problems})
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        raise ClmError(
            f"invalid rulesets ({count}; clm validate {' '.join(files)} lists them all): "
            f"{problems[0]}"
        ) from None


def _exit_on_rejected(history: EventHistory) -> None:
    """As ``clm ingest`` does: lines that are not events make the run exit 1, after the report."""
    count = history.rejected_count
    if not count:
        return
    errors.print(
        f"{count:,} line{'s' if count != 1 else ''} of {history.source} "
        f"{'are' if count != 1 else 'is'} not events and were left out:",
        markup=False,
    )
    for line, error in history.rejected[:10]:
        errors.print(f"  line {line}: {error}", markup=False)
    if count > 10:
        errors.print(f"  ... and {count - 10:,} more", markup=False)
    sys.exit(1)


@contextmanager
def _progress(
    show: bool, start: datetime, end: datetime, names: Sequence[str]
) -> Iterator[Callable[[str, datetime], None]]:
    """A progress bar per run over simulated time, on stderr and only on a terminal."""
    total = (end - start).total_seconds()
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[at]}"),
        TimeElapsedColumn(),
        console=errors,
        disable=not show,
        transient=True,
    )
    with bar:
        tasks = {name: bar.add_task(name, total=total, at="") for name in names}

        def report(name: str, at: datetime) -> None:
            bar.update(
                tasks[name],
                completed=(at - start).total_seconds(),
                at=f"{at:%Y-%m-%d}",
            )

        yield report


# -- one simulation --------------------------------------------------------------------------


def _window(result: SimulationResult) -> str:
    days = result.days
    shown = f"{days:.0f}" if days == int(days) else f"{days:.2f}"
    return f"{_when(result.start)} -> {_when(result.end)} ({shown} days)"


def _when(moment: datetime) -> str:
    if moment.time() == datetime.min.time():
        return f"{moment:%Y-%m-%d}"
    return f"{moment:%Y-%m-%d %H:%M}Z"


def _step(result: SimulationResult) -> str:
    minutes = int(result.step.total_seconds() // 60)
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"


def _events_line(result: SimulationResult) -> str:
    events = result.events
    parts = [f"{events['replayed']:,} replayed ({events['contacts']:,} contacts)"]
    if result.skipped_events:
        parts.append(
            f"{result.skipped_events:,} outside the window ignored "
            f"({events['skipped_before']:,} before, {events['skipped_after']:,} after)"
        )
    if events["duplicates"]:
        parts.append(f"{events['duplicates']:,} duplicates (already stored, or sent twice)")
    if events["failed"]:
        parts.append(f"{events['failed']:,} not applied (a reducer failed)")
    if events["rejected"]:
        parts.append(f"{events['rejected']:,} lines that are not events")
    return "events: " + ", ".join(parts)


def _actions_line(actions: dict[str, int]) -> str:
    ran = {k: v for k, v in actions.items() if k != "pending"}
    text = ", ".join(f"{v:,} {k}" for k, v in ran.items()) or "none"
    line = f"actions: {text}"
    if actions.get("pending"):
        line += f"; {actions['pending']:,} still waiting at the end (due at or after --to)"
    return line


def _sent_line(actions: dict[str, int]) -> str:
    simulated = actions.get("simulated", 0)
    if simulated:
        return (
            f"nothing was sent: {simulated:,} external actions (emails ...) were recorded as "
            "'simulated', not run"
        )
    return "nothing was sent: external actions are recorded, never run"


def _week_labels(weeks: list[str], partial: list[str]) -> list[str]:
    """``W19`` (``2026-W19`` when the window spans years), with ``*`` on partial weeks."""
    years = {week[:4] for week in weeks}
    return [
        (week if len(years) > 1 else week[5:]) + ("*" if week in partial else "") for week in weeks
    ]


def _cell(value: int) -> str:
    return f"{value:,}" if value else "-"


def _print_result(result: SimulationResult, paths: Sequence[str]) -> None:
    console.print(
        f"[bold]backtest[/] {_window(result)}, {len(result.rulesets)} rulesets, step "
        f"{_step(result)}: {result.duration_seconds:.1f} s "
        f"({result.days_per_second:,.1f} simulated days/s)",
        soft_wrap=True,
    )
    console.print(_events_line(result), soft_wrap=True, markup=False)
    console.print(_actions_line(result.actions), soft_wrap=True, markup=False)
    console.print(_sent_line(result.actions), soft_wrap=True, markup=False)
    blocked = any(entry["blocked"] for entry in result.per_rule.values())
    table = Table(title="fires per rule, by ISO week", title_justify="left", show_footer=True)
    table.add_column("rule", footer="all rules", overflow="fold")
    totals = result.as_dict(contacts=False)["totals"]
    for week, label in zip(
        result.weeks, _week_labels(result.weeks, result.partial_weeks), strict=True
    ):
        table.add_column(label, justify="right", footer=_cell(totals["by_week"][week]))
    table.add_column("fired", justify="right", footer=f"{totals['fired']:,}")
    table.add_column("contacts", justify="right", footer=f"{totals['contacts']:,}")
    if blocked:
        total_blocked = sum(e["blocked"] for e in result.per_rule.values())
        table.add_column("blocked", justify="right", footer=_cell(total_blocked))
    for key, entry in result.per_rule.items():
        name = key if entry["enabled"] else f"{key} (disabled)"
        row = [name, *(_cell(entry["by_week"].get(w, 0)) for w in result.weeks)]
        row += [f"{entry['fired']:,}", f"{entry['contacts']:,}"]
        if blocked:
            row.append(_cell(entry["blocked"]))
        table.add_row(*row)
    _print_table(table)
    if result.partial_weeks:
        console.print("[dim]* a week the window covers only in part[/]")
    console.print(
        "[dim]fired: decisions (a rule that fired once queues all its actions); contacts: "
        "distinct contacts; blocked: matched but held back by a limit[/]",
        soft_wrap=True,
    )
    _print_notes(result)
    _print_experiments(result.experiments)
    if result.kept:
        console.print(
            f"scratch store kept at {result.kept}: clm explain CONTACT --db {result.kept} "
            f"--rulesets {' '.join(paths)}",
            soft_wrap=True,
            markup=False,
        )


def _print_experiments(experiments: list[dict[str, Any]], side: str = "") -> None:
    """Per experiment and arm: who was exposed, what they would have received, and the goal."""
    for found in experiments:
        if side:
            console.print(f"[bold]{escape(side)}[/]", soft_wrap=True)
        table = Table(
            "arm",
            "exposed",
            "decisions",
            "actions",
            "receives",
            "converted",
            "rate",
            title=f"experiment {found['experiment']}: what each arm would have received "
            f"(goal: {found['goal']})",
            title_justify="left",
        )
        for arm in found["arms"]:
            receives = "; ".join(
                f"{item['action']} {json.dumps(item['with'], sort_keys=True)}"
                for item in arm["receives"]
            )
            rate = "-" if arm["rate"] is None else f"{arm['rate'] * 100:.2f}%"
            table.add_row(
                arm["arm"] + (" (holdout)" if arm["holdout"] else ""),
                f"{arm['exposed']:,}",
                f"{arm['decisions']:,}",
                f"{arm['actions_queued']:,}",
                receives or "nothing",
                f"{arm['converted']:,}",
                rate,
            )
        _print_table(table)
        console.print(f"{found['verdict']} ({found['method']})", markup=False, soft_wrap=True)


def _print_table(table: Table) -> None:
    """On a terminal, fit its width; into a file or a pipe, keep every column readable."""
    if console.is_terminal:
        console.print(table)
    else:
        Console(file=console.file, width=FILE_WIDTH, highlight=False).print(table)


def _print_notes(result: SimulationResult, side: str = "") -> None:
    prefix = f"{side}: " if side else ""
    for note in result.notes[:20]:
        errors.print(f"note: {prefix}{note}", markup=False)
    for note in result.dispatch_notes[:5]:
        errors.print(f"note: {prefix}{note}", markup=False)
    if len(result.dispatch_notes) > 5:
        errors.print(
            f"note: {prefix}... and {len(result.dispatch_notes) - 5:,} more action notes "
            "(vetoes, retries, dead letters; --json lists them)",
            markup=False,
        )


# -- a comparison ----------------------------------------------------------------------------


def _delta(old: int, new: int) -> str:
    """``+254 (+59%)``: for table cells."""
    change = new - old
    if not change:
        return "0"
    pct = f" ({100 * change / old:+.0f}%)" if old else ""
    return f"{change:+,}{pct}"


def _change(old: int, new: int) -> str:
    """``24,339 -> 24,700 (+361, +1%)``: for sentences."""
    change = new - old
    if not change:
        return f"{old:,} -> {new:,} (no change)"
    pct = f", {100 * change / old:+.0f}%" if old else ""
    return f"{old:,} -> {new:,} ({change:+,}{pct})"


def _what_changed(rule: dict[str, Any]) -> str:
    status, definition = rule["status"], rule["definition"]
    if status in ("added", "removed"):
        return f"rule {status}"
    enabled = rule["enabled"]
    if enabled["old"] != enabled["new"]:
        return "enabled in new" if enabled["new"] else "disabled in new"
    if definition == "modified":
        return "rule modified"
    if status == "differs":
        return "rule unchanged: knock-on of other changes"
    return ""


def _print_comparison(comparison: Comparison, old_label: str, new_label: str) -> None:
    old, new = comparison.old, comparison.new
    summary = comparison.summary()
    console.print(
        f"[bold]compare[/] {escape(old_label)} (old) with {escape(new_label)} (new) over "
        f"{_window(old)}, "
        f"step {_step(old)}: {old.duration_seconds + new.duration_seconds:.1f} s",
        soft_wrap=True,
        highlight=False,
    )
    console.print(_events_line(old), soft_wrap=True, markup=False)
    for change in comparison.rulesets:
        versions = f"v{change['old_version'] or '-'} -> v{change['new_version'] or '-'}"
        state = {"same": "unchanged", "changed": "changed"}.get(change["state"], change["state"])
        console.print(f"  ruleset {change['ruleset']}: {versions}, {state}", markup=False)
        if change["version_not_bumped"]:
            errors.print(
                f"warning: ruleset {change['ruleset']} changed but its version did not go up "
                f"(v{change['old_version']} -> v{change['new_version']}): bump it, so traces "
                "tell the two apart",
                markup=False,
            )
    differs = summary["rules_differ"] + summary["rules_added"] + summary["rules_removed"]
    verdict = (
        f"[bold]{differs} rule{'s' if differs != 1 else ''} would behave differently[/] "
        f"({summary['rules_differ']} changed, {summary['rules_added']} added, "
        f"{summary['rules_removed']} removed), {summary['rules_same']} the same; "
        f"[bold]{summary['contacts_affected']:,} contacts[/] treated differently; fires "
        f"{_change(summary['fired_old'], summary['fired_new'])}"
    )
    if not differs:
        verdict = (
            f"[bold]no difference[/]: all {summary['rules_same']} rules fire for the same "
            f"contacts, the same number of times ({summary['fired_old']:,} fires)"
        )
    console.print(verdict, soft_wrap=True)
    _print_action_changes(comparison)
    changed = [r for r in comparison.rules if r["status"] != "same"]
    if changed:
        _print_rule_table(changed)
        _print_week_table(comparison, changed)
        _print_contacts(changed)
    same = [r["rule"] for r in comparison.rules if r["status"] == "same"]
    if same and changed:
        console.print(
            f"[dim]the same on both sides ({len(same)}): {', '.join(same)}[/]", soft_wrap=True
        )
    modified_same = [
        r["rule"]
        for r in comparison.rules
        if r["status"] == "same" and r["definition"] == "modified"
    ]
    if modified_same:
        console.print(
            f"note: modified, yet the same results on this history: {', '.join(modified_same)} "
            "(is the history long or varied enough to exercise the change?)",
            soft_wrap=True,
            markup=False,
        )
    _print_notes(old, "old")
    _print_notes(new, "new")
    if old.kept and new.kept:
        console.print(
            f"scratch stores kept: {old.kept}, {new.kept} (clm explain CONTACT --db ... "
            "--rulesets ...)",
            soft_wrap=True,
            markup=False,
        )


def _print_action_changes(comparison: Comparison) -> None:
    actions = comparison.as_dict(limit=0)["actions"]
    parts = [
        f"{status} {pair['old']:,}"
        if pair["old"] == pair["new"]
        else f"{status} {_change(pair['old'], pair['new'])}"
        for status, pair in actions.items()
    ]
    if parts:
        console.print("actions: " + "; ".join(parts), soft_wrap=True, markup=False)
    console.print(_sent_line(comparison.new.actions), soft_wrap=True, markup=False)


def _print_rule_table(changed: list[dict[str, Any]]) -> None:
    table = Table(title="rules that differ", title_justify="left")
    for name in ("rule", "fired old", "new", "delta", "contacts old", "new", "only old"):
        table.add_column(name, justify="left" if name == "rule" else "right", overflow="fold")
    table.add_column("only new", justify="right")
    table.add_column("what changed")
    for rule in changed:
        table.add_row(
            rule["rule"],
            f"{rule['fired']['old']:,}",
            f"{rule['fired']['new']:,}",
            _delta(rule["fired"]["old"], rule["fired"]["new"]),
            f"{rule['contacts']['old']:,}",
            f"{rule['contacts']['new']:,}",
            _cell(len(rule["only_old"])),
            _cell(len(rule["only_new"])),
            _what_changed(rule),
        )
    _print_table(table)


def _print_week_table(comparison: Comparison, changed: list[dict[str, Any]]) -> None:
    weeks = comparison.old.weeks
    table = Table(title="fires by ISO week, old -> new", title_justify="left")
    table.add_column("rule", overflow="fold")
    for label in _week_labels(weeks, comparison.old.partial_weeks):
        table.add_column(label, justify="right")
    for rule in changed:
        cells = []
        for week in weeks:
            pair = rule["by_week"].get(week, {"old": 0, "new": 0})
            if pair["old"] == pair["new"]:
                cells.append(_cell(pair["old"]))
            else:
                cells.append(f"{pair['old']:,}->{pair['new']:,}")
        table.add_row(rule["rule"], *cells)
    _print_table(table)
    if comparison.old.partial_weeks:
        console.print("[dim]* a week the window covers only in part[/]")


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:SHOW_IDS])
    more = f" (+{len(ids) - SHOW_IDS:,} more; --json lists all)" if len(ids) > SHOW_IDS else ""
    return shown + more


def _print_contacts(changed: list[dict[str, Any]]) -> None:
    console.print("[bold]contacts treated differently[/]")
    for rule in changed:
        lists = [
            ("only with old", rule["only_old"]),
            ("only with new", rule["only_new"]),
            ("on both, a different number of times", rule["count_changed"]),
        ]
        if not any(ids for _, ids in lists):
            continue
        note = _what_changed(rule)
        console.print(f"  {rule['rule']}" + (f" ({note})" if note else ""), markup=False)
        for label, ids in lists:
            if ids:
                console.print(
                    f"    {label} ({len(ids):,}): {_ids(ids)}", markup=False, soft_wrap=True
                )
