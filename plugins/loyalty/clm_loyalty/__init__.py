"""clm-loyalty: a points programme for clm-engine.

* The programme (:mod:`.programme`): a ``loyalty`` document beside the rulesets: expiry,
  tiers with thresholds and downgrade rules, milestones.
* Actions (:mod:`.actions`): ``loyalty.earn`` (fixed points, or per unit of money of the
  triggering event), ``loyalty.redeem`` and ``loyalty.adjust``, refused beyond the balance;
  the follow-ups they enqueue, ``loyalty.expire`` and ``loyalty.review_tier``.
* The ledger (:mod:`.ledger`): append-only entries, exactly once by key, balances summed from
  them, FIFO lots derived from them; tier history and milestones (:mod:`.tiers`).
* Events rules can trigger on: ``loyalty.tier_changed``, ``loyalty.milestone``,
  ``loyalty.redeemed``, ``loyalty.redeem_refused``, ``loyalty.points_expired``.
* Facts ``contact.loyalty.balance``, ``.tier``, ``.lifetime_points``, ``.qualifying_points``,
  ``.points_expiring``; the ``clm loyalty`` commands (:mod:`.cli`) and report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from clm_engine import Erasure, Tables, hookimpl

from . import actions, facts, programme
from .schema import TABLES

if TYPE_CHECKING:
    import click

__all__ = ["TABLES"]


@hookimpl
def register_tables(register: Callable[..., None]) -> None:
    for table in TABLES:
        register(table)


@hookimpl
def register_documents(register: Callable[..., None]) -> None:
    register(
        programme.KIND,
        programme.Programme,
        description="a loyalty points programme: expiry, tiers and downgrade rules, milestones",
    )


@hookimpl
def register_actions(register: Callable[..., None]) -> None:
    register(
        "loyalty.earn",
        actions.earn,
        actions.EarnParams,
        description="Credit points: fixed, or per unit of the event's money (1 per 1.00)",
    )
    register(
        "loyalty.redeem",
        actions.redeem,
        actions.RedeemParams,
        description="Take points for a reward; refused beyond the balance",
    )
    register(
        "loyalty.adjust",
        actions.adjust,
        actions.AdjustParams,
        description="Add or take points with a reason; never below zero",
    )
    register(
        "loyalty.expire",
        actions.expire,
        actions.ExpireParams,
        description="Expire what is left of a lot (enqueued by loyalty.earn; FIFO)",
    )
    register(
        "loyalty.review_tier",
        actions.review_tier,
        actions.ReviewParams,
        description="Judge the tier again by the downgrade rules (enqueued by earns, changes)",
    )


@hookimpl
def register_facts(register: Callable[..., None]) -> None:
    for name, compute, kind in facts.FACTS:
        register(name, compute, type=kind, description=compute.__doc__)


@hookimpl
def register_commands(cli: click.Group) -> None:
    from .cli import loyalty

    cli.add_command(loyalty)


@hookimpl
def forget_contact(tables: Tables, contact_id: str, erasure: Erasure) -> dict[str, int]:
    from .erasure import forget

    return forget(tables, contact_id, erasure)
