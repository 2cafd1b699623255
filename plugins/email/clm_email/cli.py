"""``clm email``: preview a template for a real contact; the send log; suppressions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from clm_engine import ClmError
from clm_engine.cli import (
    console,
    db_option,
    json_option,
    open_engine,
    print_json,
    print_tsv,
    rulesets_option,
    tsv_option,
)

from . import templates
from .message import build_message, message_id
from .settings import resolve_settings, unsubscribe_secret


class EmailGroup(click.Group):
    """Errors a user should see (``ClmError``) as one line, also when the group is invoked on
    its own rather than through ``clm`` (which does the same)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClmError as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=EmailGroup)
def email() -> None:
    """Email: preview templates, the send log, suppressed addresses."""


@email.command()
@click.argument("template_name", metavar="TEMPLATE")
@click.option("--contact", "contact_id", required=True, help="The contact to render it for.")
@db_option
@rulesets_option
@click.option(
    "--eml",
    "eml_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the whole message (headers, text and HTML parts) to this .eml file.",
)
@click.option("--html", "show_html", is_flag=True, help="Print the HTML part too.")
@json_option
def preview(
    template_name: str,
    contact_id: str,
    db_path: Path,
    ruleset_paths: tuple[Path, ...],
    eml_path: Path | None,
    show_html: bool,
    as_json: bool,
) -> None:
    """Render TEMPLATE for contact --contact exactly as email.send would; nothing is sent.

    Templates are documents beside the rulesets: pass --rulesets (or $CLM_RULESETS).
    """
    if not ruleset_paths:
        raise ClmError("pass --rulesets DIR (or set $CLM_RULESETS): templates live beside them")
    with open_engine(db_path, rulesets=ruleset_paths) as engine:
        documents = getattr(engine, "documents", {}) or {}
        found = documents.get(templates.KIND, {})
        template = found.get(template_name)
        if template is None:
            from .sequences import unknown_name

            raise ClmError(unknown_name("template", template_name, found))
        contact = engine.contact(contact_id)
        if contact is None:
            raise ClmError(f"no contact {contact_id!r} in {db_path}")
        now = engine.clock.now()
    settings = resolve_settings()
    link = templates.unsubscribe_link(settings.unsubscribe_url, contact.id, unsubscribe_secret())
    context = templates.context_for(contact, template, unsubscribe_url=link)
    try:
        rendered = templates.render(template, context)
    except templates.RenderError as error:
        raise ClmError(f"cannot render for {contact_id}: {error}") from None
    message = build_message(
        rendered,
        to=contact.email or "(no address)",
        sender=settings.from_address,
        message_id=message_id(f"preview/{template_name}/{contact.id}", settings.domain),
        date=now,
        unsubscribe_url=link,
        unsubscribe_mailto=settings.unsubscribe_mailto,
        reply_to=settings.reply_to,
        headers={"X-CLM-Template": template_name},
    )
    if eml_path is not None:
        eml_path.write_bytes(message.as_bytes())
    if as_json:
        print_json(
            {
                "template": template_name,
                "contact": contact.id,
                "headers": {k: str(v) for k, v in message.items()},
                "subject": rendered.subject,
                "text": rendered.text,
                "html": rendered.html,
                "eml": str(eml_path) if eml_path else None,
            }
        )
        return
    for name, value in message.items():
        if not name.startswith("Content-") and name != "MIME-Version":
            console.print(f"[bold]{name}:[/] {value}", markup=True, highlight=False)
    console.print()
    console.print(rendered.text, markup=False)
    if show_html and rendered.html:
        console.print("[bold]-- HTML --[/]")
        console.print(rendered.html, markup=False)
    if eml_path is not None:
        console.print(f"[dim]wrote {eml_path}[/]")


@email.command("log")
@db_option
@click.option("--contact", "contact_id", help="Only this contact's messages.")
@click.option("--limit", default=20, show_default=True, help="How many, newest first.")
@json_option
@tsv_option
def log(db_path: Path, contact_id: str | None, limit: int, as_json: bool, as_tsv: bool) -> None:
    """Messages sent, failed and bounced, newest first."""
    where = {"contact_id": contact_id} if contact_id else {}
    with open_engine(db_path) as engine:
        rows = [
            {
                "contact": row["contact_id"],
                "at": row["sent_at"] or row["created_at"],
                "status": row["status"],
                "template": row["template"],
                "sequence": row["sequence"],
                "step": row["step"],
                "subject": row["subject"],
                "error": row["error"],
                "message_id": row["message_id"],
            }
            for row in engine.store.tables["email_messages"].rows(
                where, order_by=["-id"], limit=limit
            )
        ]
    if as_json:
        print_json({"messages": rows})
        return
    if as_tsv:
        print_tsv(list(rows[0]) if rows else ["contact"], [list(row.values()) for row in rows])
        return
    table = Table("at", "contact", "status", "template", "sequence/step", "subject or error")
    for row in rows:
        where_in = f"{row['sequence']}/{row['step']}" if row["sequence"] else ""
        table.add_row(
            (row["at"] or "")[:16],
            escape(row["contact"] or ""),
            row["status"],
            escape(row["template"] or ""),
            escape(where_in),
            escape(row["error"] or row["subject"] or ""),
        )
    console.print(table)


@email.command()
@click.argument("contact_id")
@db_option
@json_option
@tsv_option
def queue(contact_id: str, db_path: Path, as_json: bool, as_tsv: bool) -> None:
    """CONTACT_ID's email actions in the outbox: sends and sequence steps, with why each waits.

    `clm explain` shows the actions a rule queued; a drip's later steps and messages are
    queued by the sequence itself, and this is where their deferrals and vetoes show.
    """
    with open_engine(db_path) as engine:
        rows = [r for r in engine.store.actions_for(contact_id) if r.action.startswith("email.")]
        rows.sort(key=lambda r: r.seq)
        timelines = engine.action_timelines(rows)
    items: list[dict[str, Any]] = []
    for r in rows:
        history = timelines.get(r.seq, [])
        finished = r.status != "pending" and r.finished_at is not None
        items.append(
            {
                "action": r.action,
                "what": r.params.get("template")
                or r.params.get("step")
                or r.params.get("sequence"),
                "sequence": r.params.get("sequence"),
                "status": r.status,
                # A finished row's due time is the one it had when it was taken up (not the
                # end of a send's lease); when it finished is ``finished_at``.
                "due_at": history[-1]["due_at"] if finished and len(history) > 1 else r.due_at,
                "finished_at": r.finished_at if finished else None,
                "note": r.note,
                "history": history,
            }
        )
    if as_json:
        print_json({"contact": contact_id, "actions": items})
        return
    if as_tsv:
        headers = ["due_at", "finished_at", "action", "sequence", "template_or_step", "status"]
        print_tsv(
            [*headers, "note", "history"],
            [
                [
                    item["due_at"],
                    item["finished_at"],
                    item["action"],
                    item["sequence"],
                    item["what"],
                    item["status"],
                    item["note"],
                    _history_line(item["history"]),
                ]
                for item in items
            ],
        )
        return
    table = Table("when", "action", "sequence", "template / step", "status", "why", "history")
    for item in items:
        when = (
            f"{item['finished_at'][:16]} (finished)"
            if item["finished_at"]
            else f"{item['due_at'][:16]} (due)"
        )
        table.add_row(
            when,
            item["action"].removeprefix("email."),
            escape(item["sequence"] or ""),
            escape(item["what"] or ""),
            item["status"],
            escape(item["note"] or ""),
            escape(_history_line(item["history"])),
        )
    console.print(table)


def _history_line(history: list[dict[str, Any]]) -> str:
    """A row's history in one cell: ``queued 05-01 10:00 → deferred 05-01 10:00 (until
    05-08 09:00) → sent 05-08 09:00``."""
    parts = []
    for entry in history:
        text = f"{entry['event']} {(entry['at'] or '')[5:16].replace('T', ' ')}".rstrip()
        if entry.get("until"):
            text += f" (until {entry['until'][5:16].replace('T', ' ')})"
        parts.append(text)
    return " → ".join(parts)


@email.command()
@db_option
@json_option
@tsv_option
def suppressions(db_path: Path, as_json: bool, as_tsv: bool) -> None:
    """Addresses that get no email (hard bounces), or no marketing email (unsubscribed)."""
    with open_engine(db_path) as engine:
        rows = [
            {
                "address": r["address"],
                "contact": r["contact_id"],
                "reason": r["reason"],
                "at": r["at"],
            }
            for r in engine.store.tables["email_suppressions"].rows(order_by=["-at"])
        ]
    if as_json:
        print_json({"suppressions": rows})
        return
    if as_tsv:
        print_tsv(["address", "contact", "reason", "at"], [list(r.values()) for r in rows])
        return
    table = Table("address", "contact", "reason", "since")
    for row in rows:
        table.add_row(
            escape(row["address"]), escape(row["contact"] or ""), row["reason"], row["at"][:16]
        )
    console.print(table)
    console.print(f"{len(rows):,} suppressed addresses")
