"""``clm contacts``: look at contacts, and erase one on request (GDPR)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from ..errors import ClmError
from ..models import Contact, utc_text
from ..scores import current_scores
from . import cli
from .common import (
    console,
    db_option,
    errors,
    json_option,
    money,
    open_engine,
    print_json,
    print_tsv,
    rulesets_option,
    tsv_option,
)


@cli.group()
def contacts() -> None:
    """Show, list and forget contacts."""


@contacts.command("show")
@click.argument("contact_id")
@db_option
@click.option(
    "--events", "event_limit", default=15, show_default=True, help="Recent events to show."
)
@json_option
def show(contact_id: str, db_path: Path, event_limit: int, as_json: bool) -> None:
    """A contact's state, stage history and recent events."""
    with open_engine(db_path) as engine:
        contact = engine.contact(contact_id)
        if contact is None:
            raise ClmError(f"no contact {contact_id!r} in {db_path}")
        history = engine.store.stage_history(contact_id)
        events = engine.store.recent_events(contact_id, limit=event_limit)
        # Stored scores are as of their last change; rules read them decayed to their time.
        scores_now = current_scores(contact, engine.clock.now())
    if as_json:
        print_json(
            {
                "contact": contact.model_dump(mode="json"),
                "scores_now": scores_now,
                "stage_history": [vars(t) for t in history],
                "recent_events": [e.model_dump(mode="json") for e in events],
            }
        )
        return
    tree = Tree(
        f"[bold]{esc(contact.id)}[/]  {esc(contact.email or '(no email)')}  "
        f"stage: [bold]{esc(contact.stage)}[/]"
    )
    name = " ".join(str(contact.attributes.get(k, "")) for k in ("first_name", "last_name")).strip()
    facts = tree.add("contact")
    for label, value in (
        ("name", name or None),
        ("timezone", contact.timezone),
        ("created", contact.created_at),
        ("last event", contact.last_event_at),
        ("last active", contact.metrics.get("last_active_at")),
        ("consent", contact.consent or None),
        ("tags", ", ".join(contact.tags) or None),
        ("scores", _scores(contact, scores_now)),
    ):
        if value is not None:
            facts.add(f"{label}: {esc(value)}")
    _add_mapping(tree.add("attributes"), contact.attributes)
    _add_mapping(tree.add("metrics"), contact.metrics)
    stages = tree.add("stage history")
    for t in history:
        change = f"{t.from_stage or '(new)'} -> {t.to_stage}"
        stages.add(f"{t.at[:19]}  {esc(change)}  [dim]{esc(t.cause)}[/]")
    console.print(tree)
    table = Table("occurred at", "type", "properties", title="recent events", title_justify="left")
    for event in events:
        props = ", ".join(f"{k}={v}" for k, v in event.properties.items())
        table.add_row(event.occurred_at.strftime("%Y-%m-%d %H:%M"), esc(event.type), esc(props))
    console.print(table)


def esc(value: Any) -> str:
    """Text from data, shown as it is (rich markup in it escaped: ``[b]`` stays ``[b]``)."""
    return escape("" if value is None else str(value))


def _scores(contact: Contact, now: dict[str, float]) -> str | None:
    """Each score as of now, and as stored when its half-life has moved it since:
    ``lead 12.5 (25 on 2026-10-01, halves every 30 days)``."""
    changed = contact.metrics.get("scores_changed_at") or {}
    half_lives = contact.metrics.get("score_half_lives") or {}
    shown = []
    for name, value in sorted(now.items()):
        stored = contact.scores[name]
        text = f"{name} {value:g}"
        if value != stored:
            days = float(half_lives.get(name, 0)) / 86400
            on = str(changed.get(name, ""))[:10]
            text += f" ({stored:g} on {on}, halves every {days:g} days)"
        shown.append(text)
    return ", ".join(shown) or None


def _add_mapping(node: Tree, mapping: dict[str, Any]) -> None:
    for key, value in sorted(mapping.items()):
        node.add(esc(f"{key}: {value}"))


@contacts.command("list")
@db_option
@rulesets_option
@click.option(
    "--stage",
    help="Only contacts in this lifecycle stage (a stage of the loaded rulesets' model).",
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@click.option("--offset", default=0, type=click.IntRange(0))
@click.option(
    "--sort",
    "order_by",
    default="id",
    show_default=True,
    type=click.Choice(["id", "spent", "orders", "recent", "created"]),
)
@json_option
@tsv_option
def list_(
    db_path: Path,
    ruleset_paths: tuple[Path, ...],
    stage: str | None,
    limit: int,
    offset: int,
    order_by: str,
    as_json: bool,
    as_tsv: bool,
) -> None:
    """List contacts, optionally in one stage.

    A custom stage model (a ruleset's ``stages``) is known with --rulesets; a stage some
    contact is in is accepted without."""
    with open_engine(db_path, rulesets=ruleset_paths) as engine:
        found = engine.store.list_contacts(
            stage=stage, limit=limit, offset=offset, order_by=order_by
        )
        total = engine.store.count_contacts(stage=stage)
        known_stages = engine.stages
    if as_json:
        print_json({"total": total, "contacts": [c.model_dump(mode="json") for c in found]})
        return
    if stage is not None and stage not in known_stages and not total:
        hint = "" if ruleset_paths else " (pass --rulesets for a custom stage model)"
        raise ClmError(f"unknown stage {stage!r}; the stages are: {', '.join(known_stages)}{hint}")
    if as_tsv:
        headers = ["id", "email", "stage", "orders", "spent", "last_event_at"]
        print_tsv(headers, [_tsv_row(contact) for contact in found])
        return
    table = Table(
        "id",
        "email",
        "stage",
        "orders",
        "spent",
        "last event",
        title=f"{total:,} contacts" + (f" in stage {stage}" if stage else ""),
        title_justify="left",
    )
    for contact in found:
        table.add_row(*(esc(cell) for cell in _row(contact)))
    console.print(table)
    if total > offset + len(found):
        console.print(f"[dim]showing {offset + 1}-{offset + len(found)}; use --offset for more[/]")


def _tsv_row(contact: Contact) -> list[Any]:
    """A contact as TSV fields: exact values (the amount unformatted, the time in full)."""
    metrics = contact.metrics
    last = contact.last_event_at
    return [
        contact.id,
        contact.email,
        contact.stage,
        metrics.get("orders_count", 0),
        metrics.get("total_spent", 0),
        utc_text(last) if last else None,
    ]


def _row(contact: Contact) -> tuple[str, ...]:
    metrics = contact.metrics
    return (
        contact.id,
        contact.email or "",
        contact.stage or "",
        str(metrics.get("orders_count", 0)),
        money(metrics.get("total_spent", 0)),
        contact.last_event_at.strftime("%Y-%m-%d") if contact.last_event_at else "",
    )


@contacts.command("forget")
@click.argument("contact_id")
@click.option(
    "--by",
    "requested_by",
    default=None,
    help="Who asks for the erasure, for the record (default: the operating-system user).",
)
@click.option(
    "--rejects",
    "rejects_paths",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also scrub this rejects file (those clm ingest wrote are known already). Repeatable.",
)
@db_option
@json_option
def forget(
    contact_id: str,
    requested_by: str | None,
    rejects_paths: tuple[Path, ...],
    db_path: Path,
    as_json: bool,
) -> None:
    """Erase a contact's personal data everywhere (GDPR erasure), and say what went.

    The contact's rows are removed from the core's tables and every plugin's; other
    contacts' references to them (a friend's referred_by, a ledger's counterpart) are
    rewritten to a random pseudonym; all in one transaction, checked (no table may still
    mention the id, email or name) or not done at all. Then the files the plugins wrote about
    the contact (sent .eml copies) are removed, and the rejects files are rewritten without
    them. The request is recorded: who, when, counts, no personal data.
    """
    with open_engine(db_path) as engine:
        report = engine.forget(contact_id, requested_by=requested_by, files=rejects_paths)
    if as_json:
        print_json(report.as_dict())
    elif not report.found:
        console.print(
            f"nothing held for contact {contact_id!r}; nothing removed "
            f"(request recorded as {report.erasure_id})",
            markup=False,
        )
    else:
        console.print(
            f"forgot contact {contact_id!r} (erasure {report.erasure_id}, "
            f"by {report.requested_by}):",
            markup=False,
        )
        for table, count in report.removed.items():
            console.print(f"  {table}: {count:,} rows removed", markup=False)
        for table, count in report.pseudonymised.items():
            console.print(
                f"  {table}: {count:,} rows pseudonymised (now {report.erasure_id})",
                markup=False,
            )
        for path in report.files_removed:
            console.print(f"  file removed: {path}", markup=False)
        for path in report.files_rewritten:
            console.print(f"  file rewritten without the contact: {path}", markup=False)
    if report.file_errors:
        for problem in report.file_errors:
            errors.print(f"  file not changed: {problem}", markup=False)
        sys.exit(1)
