"""``clm referral ...``: codes, ledgers, review of held rewards, redemption and the report."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from clm_engine import ClmError, Engine, Tables, utc_text
from clm_engine.cli import (
    console,
    db_option,
    json_option,
    open_engine,
    print_json,
    registry_of,
    rulesets_option,
)
from clm_engine.money import format_minor

from . import ledger
from .attribution import ensure_code
from .codes import display_code
from .fraud import get_fraud_checks
from .report import format_report, report
from .reviews import approved_rewards


@click.group()
def referral() -> None:
    """Referrals: codes, the reward ledger, review of held rewards, the report."""


def _engine(db_path: Path, rulesets: tuple[Path, ...] = ()) -> Engine:
    return open_engine(db_path, rulesets=rulesets)  # opening it runs the plugin's migrations


def _read(engine: Engine) -> Tables:
    """The plugin's tables, read only (no write lock taken)."""
    return engine.store.tables


def _need_contact(engine: Engine, contact_id: str) -> None:
    if engine.contact(contact_id) is None:
        raise ClmError(f"no contact {contact_id!r}")


@referral.command()
@click.argument("contact_id")
@click.option("--rotate", is_flag=True, help="Retire the current code and issue a new one.")
@db_option
@json_option
def code(contact_id: str, rotate: bool, db_path: Path, as_json: bool) -> None:
    """Show a contact's referral code, creating it if they have none."""
    with _engine(db_path) as engine:
        _need_contact(engine, contact_id)
        with engine.store.write() as tx:
            value, created = ensure_code(
                tx.tables, contact_id, at=utc_text(engine.clock.now()), rotate=rotate
            )
    if as_json:
        print_json({"contact": contact_id, "code": display_code(value), "created": created})
    else:
        console.print(f"{display_code(value)}" + (" (new)" if created else ""), markup=False)


@referral.command(name="ledger")
@click.argument("contact_id")
@db_option
@json_option
def ledger_command(contact_id: str, db_path: Path, as_json: bool) -> None:
    """A contact's ledger entries (every credit, approval, reversal, redemption) and balance."""
    with _engine(db_path) as engine:
        tables = _read(engine)
        rows = ledger.entries(tables, contact_id)
        balances = ledger.balances(tables, contact_id)
    if as_json:
        print_json({"contact": contact_id, "entries": rows, "balances": balances})
        return
    if not rows:
        console.print(f"{contact_id} has no referral rewards", markup=False)
        return
    for row in rows:
        head = (
            f"#{row['seq']} {row['at'][:19]}Z {row['kind']:<8} {row['reward_id']} -> "
            f"{row['state']} ({row['reward_kind']}, {row['role']} of "
            f"{row['referred_contact_id']}) by {row['actor']}"
        )
        console.print(head, markup=False, soft_wrap=True)
        if row["reason"]:
            console.print(f"    {row['reason']}", markup=False, soft_wrap=True)
        for line in row["lines"]:
            side = "Dr" if line["amount_minor"] > 0 else "Cr"
            amount = format_minor(abs(line["amount_minor"]), line["currency"])
            console.print(f"    {side} {line['account']:<32} {amount:>14}", markup=False)
    for currency, parts in balances.items():
        console.print(
            f"balance: available {format_minor(parts['available'], currency)}, "
            f"pending {format_minor(parts['pending'], currency)}",
            markup=False,
        )


def _review_event(
    reward: dict[str, Any], decision: str, reviewer: str, note: str | None, at: datetime
) -> dict[str, Any]:
    key = f"{reward['id']}/{decision}"
    return {
        "id": "referral-review-" + hashlib.sha256(key.encode()).hexdigest()[:24],
        "contact_id": reward["beneficiary_contact_id"],
        "type": "referral.reviewed",
        "occurred_at": utc_text(at),
        "properties": {
            "reward_id": reward["id"],
            "decision": decision,
            "reviewer": reviewer,
            "note": note,
        },
    }


def _to_review(tables: Tables, target: str, decision: str) -> list[dict[str, Any]]:
    """The rewards a decision is about: one reward by its id, or every reward held for one
    referral, by the referred contact's id (the referrer's and the friend's go together)."""
    row = ledger.get_reward(tables, target)
    if row is not None:
        if row["state"] != "pending":
            raise ClmError(f"reward {target} is {row['state']}: nothing to review")
        if decision == "approve" and not row["held_reasons"]:
            raise ClmError(f"reward {target} is not held: it is approved automatically")
        return [row]
    rows = ledger.rewards(tables, state="pending", held=True, where={"referred_contact_id": target})
    if not rows:
        raise ClmError(f"no reward {target!r}, and no reward held for a referral of {target!r}")
    return rows


@referral.command()
@click.option(
    "--approve",
    "approve_ids",
    multiple=True,
    metavar="ID",
    help="Approve a held reward (its rw- id), or every held reward of a referred contact.",
)
@click.option(
    "--reject",
    "reject_ids",
    multiple=True,
    metavar="ID",
    help="Reject a pending reward (its rw- id), or every held reward of a referred contact.",
)
@click.option("--by", "reviewer", default="ops", show_default=True, help="Who decides.")
@click.option("--note", default=None, help="Why (recorded in the ledger entry).")
@db_option
@rulesets_option
@json_option
def review(
    approve_ids: tuple[str, ...],
    reject_ids: tuple[str, ...],
    reviewer: str,
    note: str | None,
    db_path: Path,
    ruleset_paths: tuple[Path, ...],
    as_json: bool,
) -> None:
    """List rewards held for review, or approve / reject them.

    A decision is recorded as a referral.reviewed event on the reward's beneficiary (rules
    given with --rulesets react to it) and as a ledger entry naming the reviewer.
    """
    with _engine(db_path, ruleset_paths) as engine:
        tables = _read(engine)
        decisions = [(i, "approve") for i in approve_ids] + [(i, "reject") for i in reject_ids]
        done = []
        for target, decision in decisions:
            for row in _to_review(tables, target, decision):
                event = _review_event(row, decision, reviewer, note, engine.clock.now())
                engine.ingest(event)
                done.append({"reward": row["id"], "decision": decision})
        held = ledger.rewards(tables, state="pending", held=True)
    if as_json:
        print_json({"decisions": done, "held": held})
        return
    for item in done:
        verb = {"approve": "approved", "reject": "rejected"}[item["decision"]]
        console.print(f"{item['reward']}: {verb} by {reviewer}", markup=False)
    if decisions:
        return
    if not held:
        console.print("no reward is held for review", markup=False)
    for row in held:
        console.print(
            f"{row['id']}  {format_minor(row['amount_minor'], row['currency'])} to "
            f"{row['beneficiary_contact_id']} ({row['role']}) for {row['referred_contact_id']}, "
            f"earned {row['earned_at'][:10]}",
            markup=False,
            soft_wrap=True,
        )
        for reason in row["held_reasons"]:
            console.print(f"    {reason}", markup=False, soft_wrap=True)


@referral.command()
@click.argument("contact_id")
@click.option("--reference", required=True, help="The payout's reference (bank transfer ...).")
@db_option
@rulesets_option
@json_option
def redeem(
    contact_id: str,
    reference: str,
    db_path: Path,
    ruleset_paths: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Pay out a contact's approved rewards (one redemption entry per reward)."""
    with _engine(db_path, ruleset_paths) as engine:
        tables = _read(engine)
        _need_contact(engine, contact_id)
        approved = approved_rewards(tables, contact_id)
        if not approved:
            raise ClmError(f"{contact_id} has no approved reward to redeem")
        digest = hashlib.sha256(reference.encode()).hexdigest()[:16]
        engine.ingest(
            {
                "id": f"referral-redeem-{contact_id}-{digest}",
                "contact_id": contact_id,
                "type": "referral.redeem",
                "occurred_at": utc_text(engine.clock.now()),
                "properties": {"reference": reference},
            }
        )
        balances = ledger.balances(tables, contact_id)
    redeemed = [row["id"] for row in approved]
    if as_json:
        print_json({"contact": contact_id, "redeemed": redeemed, "balances": balances})
        return
    total: dict[str, int] = {}
    for row in approved:
        total[row["currency"]] = total.get(row["currency"], 0) + row["amount_minor"]
    paid = ", ".join(format_minor(v, c) for c, v in sorted(total.items()))
    console.print(f"redeemed {len(redeemed)} rewards of {contact_id}: {paid}", markup=False)


@referral.command(name="report")
@click.option("--top", default=5, show_default=True, help="How many top referrers to show.")
@db_option
@json_option
def report_command(top: int, db_path: Path, as_json: bool) -> None:
    """Referral rate, rewards granted / held / reversed, and the top referrers."""
    with _engine(db_path) as engine:
        data = report(_read(engine), contacts=engine.store.count_contacts(), top=top)
    if as_json:
        print_json(data)
    else:
        console.print(format_report(data), markup=False, soft_wrap=True)


@referral.command()
@json_option
@click.pass_context
def checks(ctx: click.Context, as_json: bool) -> None:
    """The fraud checks that hold rewards for review (built-in and from plugins)."""
    found = get_fraud_checks(registry_of(ctx))
    if as_json:
        print_json(
            [
                {"name": c.name, "plugin": c.plugin, "description": c.description}
                for c in found.values()
            ]
        )
        return
    for check in found.values():
        summary = (check.description or "").strip().splitlines()[0] if check.description else ""
        console.print(f"{check.name} ({check.plugin}): {summary}", markup=False, soft_wrap=True)
