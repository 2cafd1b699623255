"""``clm plugins``, ``migrate``, ``report`` and ``failures``: what the engine has and knows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from ..engine import Engine
from ..environment import mark_production
from ..errors import ClmError
from ..models import Contact
from ..registry import Registry
from ..store import is_url, open_store
from . import analytics, cli
from .common import (
    console,
    db_option,
    errors,
    json_option,
    money,
    open_engine,
    print_json,
    registry_of,
    rulesets_option,
)

#: What ``clm plugins`` lists, in order: JSON key, table title, the name column's heading.
_KINDS = (
    ("actions", "actions", "action"),
    ("facts", "facts", "fact"),
    ("operators", "operators", "operator"),
    ("policies", "dispatch policies", "policy"),
    ("documents", "document kinds", "kind"),
    ("commands", "commands", "command"),
    ("event_handlers", "event handlers", "handler"),
    ("reducers", "reducers", "reducer"),
)


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def plugin_listing(registry: Registry) -> dict[str, Any]:
    """Every loaded plugin and everything registered, each with its plugin and distribution:
    what ``clm plugins --json`` prints. A registration that cannot be read (two plugins
    claiming one name) is listed under ``problems`` instead of stopping the listing."""
    infos = registry.plugin_info()
    by_name = {info.name: info for info in infos}
    problems: list[str] = [problem for info in infos for problem in info.problems]

    def origin(plugin: str) -> dict[str, Any]:
        info = by_name.get(plugin)
        return {
            "plugin": plugin,
            "distribution": info.distribution if info else None,
            "version": info.version if info else None,
        }

    def specs(kind: str) -> dict[str, Any]:
        try:
            found: dict[str, Any] = getattr(registry, kind)
            return found
        except ClmError as error:
            problems.append(str(error))
            return {}

    listing: dict[str, Any] = {
        "plugins": [
            {
                "name": info.name,
                "source": info.source,
                "distribution": info.distribution,
                "version": info.version,
                "hooks": list(info.hooks),
            }
            for info in infos
        ],
        "actions": [
            {"name": spec.name, **origin(spec.plugin)}
            | {
                "description": _one_line(spec.description),
                "external": spec.external,
                "pure": spec.pure,
            }
            for spec in specs("actions").values()
        ],
        "facts": [
            {"name": spec.name, "type": spec.type, **origin(spec.plugin)}
            | {"description": _one_line(spec.description)}
            for spec in specs("facts").values()
        ],
        "operators": [
            {"name": spec.name, **origin(spec.plugin)}
            | {
                "description": _one_line(spec.description),
                "fact_types": sorted(spec.fact_types) if spec.fact_types is not None else None,
            }
            for spec in specs("operators").values()
        ],
        "policies": [
            {"name": f"{info.name}.dispatch_policy", **origin(info.name)}
            | {"description": _one_line(info.policy)}
            for info in infos
            if info.policy is not None
        ],
        "documents": [
            {"name": kind.name, **origin(kind.plugin)}
            | {"description": _one_line(kind.description)}
            for kind in specs("document_kinds").values()
        ],
        "commands": [
            {"name": command, **origin(info.name)} for info in infos for command in info.commands
        ],
        "event_handlers": [
            {"name": name, "event_type": event_type, **origin(info.name)}
            for info in infos
            for event_type, name in info.event_handlers
        ],
        "reducers": [
            {"name": name, "event_type": event_type, **origin(info.name)}
            for info in infos
            for event_type, name in info.reducers
        ],
        "failed": dict(registry.load_failures),
        "problems": problems,
    }
    return listing


def _shipped_by(row: dict[str, Any]) -> str:
    if row["distribution"] is None:
        return ""
    return f"{row['distribution']} {row['version'] or ''}".strip()


@cli.command("plugins")
@json_option
def plugins_(as_json: bool) -> None:
    """Every plugin loaded, where it comes from, and everything registered: actions, facts
    (with their types), operators, dispatch policies, document kinds, commands, event handlers
    and reducers, each with its plugin and distribution; and plugins that failed to load."""
    listing = plugin_listing(registry_of())
    if as_json:
        print_json(listing)
        return
    table = Table("plugin", "from", "distribution", "hooks", title="plugins", title_justify="left")
    for info in listing["plugins"]:
        shown = (info["name"], info["source"], _shipped_by(info), ", ".join(info["hooks"]))
        table.add_row(*map(escape, shown))
    console.print(table)
    for key, title, heading in _KINDS:
        rows = listing[key]
        if not rows:
            continue
        extra = {"facts": "type", "event_handlers": "event", "reducers": "event"}.get(key)
        columns = [heading, *([extra] if extra else []), "plugin", "distribution"]
        described = key not in ("commands", "event_handlers", "reducers")
        table = Table(
            *columns, *(["description"] if described else []), title=title, title_justify="left"
        )
        for row in rows:
            cells: list[str] = [row["name"]]
            if extra:
                cells.append(row["type" if key == "facts" else "event_type"])
            cells += [row["plugin"], _shipped_by(row)]
            if described:
                cells.append(row["description"])
            table.add_row(*map(escape, cells))
        console.print(table)
    for problem in listing["problems"]:
        console.print(f"[red]problem[/] {escape(problem)}", markup=True)
    for name, reason in listing["failed"].items():
        console.print(f"[red]failed to load[/] {escape(name)}: {escape(reason)}", markup=True)


@cli.command()
@db_option
@click.option(
    "--production/--not-production",
    "production",
    default=None,
    help="Mark the database as production (test-only modes such as clm run --clock virtual "
    "then refuse it), or remove the mark. Unchanged without either.",
)
@json_option
def migrate(db_path: Path, production: bool | None, as_json: bool) -> None:
    """Create the database or bring its schema up to date (the core's and every plugin's)."""
    store = open_store(str(db_path))
    try:
        applied = store.migrate(registry_of().tables)
        if production is not None:
            mark_production(store, production, datetime.now(UTC))
        state = store.applied_migrations()
    finally:
        store.close()
    if as_json:
        print_json(
            {"db": str(db_path), "applied_now": applied, "applied": state, "production": production}
        )
        return
    if production is not None:
        console.print(f"{db_path} is marked {'production' if production else 'not production'}")
    if applied:
        console.print(f"applied {len(applied)} migration(s) to {db_path}:")
        for name in applied:
            console.print(f"  {name}")
    else:
        console.print(f"{db_path} is up to date")
    for name, done in state.items():
        console.print(f"[dim]  {name}: {', '.join(done)}[/]")


@cli.command()
@db_option
@click.option("--examples", default=3, show_default=True, help="Example contacts to show.")
@rulesets_option
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the report as one self-contained page of charts.",
)
@click.option(
    "--spend",
    "spend_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Acquisition spend (CSV: date,channel,amount,currency) for CAC and ROMI.",
)
@json_option
def report(
    db_path: Path,
    examples: int,
    ruleset_paths: tuple[Path, ...],
    html_path: Path | None,
    spend_path: Path | None,
    as_json: bool,
) -> None:
    """What the engine knows: contacts, stages, events by type, orders and revenue, and the
    lifecycle KPIs (docs/metrics.md) for the stage model of --rulesets."""
    with open_engine(db_path) as engine:
        figures = analytics.report_figures(engine, ruleset_paths, spend=spend_path)
        summary = engine.store.summary()
        sample = _example_contacts(engine, examples)
        rules = engine.store.rules_summary()
        scores = {
            name: _distribution(values) for name, values in engine.store.score_summary().items()
        }
    if html_path is not None:
        where = (
            getattr(engine.store, "path", db_path) if is_url(str(db_path)) else Path(db_path).name
        )
        analytics.write_html(html_path, figures, title=f"clm-engine report: {where}")
        errors.print(f"wrote {html_path}")
    if as_json:
        print_json(
            summary
            | {
                "examples": [c.model_dump(mode="json") for c in sample],
                "rules": rules,
                "scores": scores,
                "analytics": figures,
            }
        )
        return
    overview = Table(
        "", "", title=f"clm-engine: {db_path}", title_justify="left", show_header=False
    )
    first, last = (summary["first_event_at"] or "")[:10], (summary["last_event_at"] or "")[:10]
    for label, value in (
        ("contacts", f"{summary['contacts']:,}"),
        ("with email consent", f"{summary['contacts_with_email_consent']:,}"),
        ("customers (1+ order)", f"{summary['customers']:,}"),
        ("orders", f"{summary['orders']:,}"),
        ("revenue", f"{summary['revenue']:,.2f}"),
        ("average order value", f"{summary['average_order_value']:,.2f}"),
        ("events", f"{summary['events']:,}  ({first} to {last})"),
        ("ingest failures", f"{summary['ingest_failures']:,}"),
    ):
        overview.add_row(label, value)
    console.print(overview)
    by_type = Table("event type", "count", title="events by type", title_justify="left")
    for name, count in summary["events_by_type"].items():
        by_type.add_row(name, f"{count:,}")
    console.print(by_type)
    by_stage = Table("stage", "contacts", title="contacts by stage", title_justify="left")
    for name, count in summary["contacts_by_stage"].items():
        by_stage.add_row(name, f"{count:,}")
    console.print(by_stage)
    analytics.print_figures(figures)
    if rules:
        table = Table(
            "ruleset",
            "rule",
            "fired",
            "contacts",
            "blocked",
            "done",
            "pending",
            "other",
            title="rules at work",
            title_justify="left",
        )
        for r in rules:
            acts = r.get("actions", {})
            other = ", ".join(
                f"{k} {v:,}" for k, v in sorted(acts.items()) if k not in ("done", "pending")
            )
            table.add_row(
                r["ruleset"],
                r["rule"],
                f"{r.get('fired', 0):,}",
                f"{r.get('contacts', 0):,}",
                f"{r.get('blocked_by_limit', 0):,}",
                f"{acts.get('done', 0):,}",
                f"{acts.get('pending', 0):,}",
                other,
            )
        console.print(table)
    for name, dist in scores.items():
        console.print(
            f"score [bold]{name}[/]: {dist['contacts']:,} contacts, min {dist['min']}, "
            f"median {dist['median']}, p90 {dist['p90']}, max {dist['max']}"
        )
    if sample:
        table = Table(
            "id",
            "email",
            "stage",
            "orders",
            "spent",
            "nps",
            "lead",
            "tags",
            title="example contacts",
            title_justify="left",
        )
        for c in sample:
            m = c.metrics
            table.add_row(
                c.id,
                c.email or "",
                c.stage or "",
                str(m.get("orders_count", 0)),
                money(m.get("total_spent", 0)),
                str(m.get("nps_score", "")),
                str(c.scores.get("lead", "")),
                ", ".join(c.tags),
            )
        console.print(table)


def _distribution(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 1)

    return {
        "contacts": len(ordered),
        "min": at(0),
        "median": at(0.5),
        "p90": at(0.9),
        "max": round(ordered[-1], 1),
    }


def _example_contacts(engine: Engine, count: int) -> list[Contact]:
    """A few contacts worth looking at: the biggest spenders, then the most recently active."""
    picked: dict[str, Contact] = {}
    for order_by in ("spent", "recent"):
        for contact in engine.store.list_contacts(limit=count, order_by=order_by):
            picked.setdefault(contact.id, contact)
    return list(picked.values())[:count]


@cli.command()
@db_option
@click.option("--limit", default=50, show_default=True)
@json_option
def failures(db_path: Path, limit: int, as_json: bool) -> None:
    """Events that a reducer failed to apply (not stored; ingest them again once fixed)."""
    with open_engine(db_path) as engine:
        found = engine.store.failures(limit=limit)
    if as_json:
        print_json(found)
        return
    if not found:
        console.print("no ingest failures")
        return
    for f in found:
        console.print(
            f"[bold]{f['event_id']}[/] ({f['type']} for contact {f['contact_id']}), "
            f"{f['attempts']} attempt(s), last {f['failed_at'][:19]}"
        )
        console.print(f"  reducer {f['reducer']}: {f['error']}", markup=False)
