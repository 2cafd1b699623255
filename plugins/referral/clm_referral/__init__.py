"""clm-referral: referral codes, attribution, an auditable reward ledger and fraud rules.

* Codes per contact (:mod:`.codes`), issued by the ``referral.code`` action or
  ``clm referral code ID``.
* Attribution (:mod:`.attribution`): event handlers for ``referral.signup`` and ``signup``
  events carrying a ``referral_code``; the first attribution in event time wins.
* Rewards (:mod:`.actions`, :mod:`.ledger`): ``referral.reward`` credits the referrer (and
  optionally the referred contact) once per referred contact and kind, in a double-entry
  ledger; approval, review, reversal and redemption are new entries, never updates.
* Fraud rules (:mod:`.fraud`, :mod:`.checks`): a hook of this plugin; flagged rewards are held.
* Facts ``referral.count``, ``referral.successful``, ``referral.balance``; the ``clm
  referral`` commands (:mod:`.cli`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from clm_engine import Contact, Erasure, Event, Tables, hookimpl

from . import actions, attribution, checks, facts, fraud, reviews
from .schema import TABLES

if TYPE_CHECKING:
    import click

__all__ = ["TABLES"]


def _text(event: Event, key: str, *, required: bool) -> str | None:
    value = event.properties.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"a {event.type} event needs a non-empty string {key!r} (got {value!r})")
    return value


def apply_signup(contact: Contact, event: Event) -> None:
    """``referral.signup``, on the referred contact: remembers who referred them.

    Properties: ``referrer_id`` (the referrer's contact id) and/or ``code`` (a referral code,
    resolved to its owner by the attribution handler). Sets ``attributes["referred_by"]``
    when ``referrer_id`` is given; the first referral (in event time) wins.
    """
    code = _text(event, "code", required=False)
    referrer_id = _text(event, "referrer_id", required=code is None)
    if referrer_id == contact.id:
        raise ValueError(f"contact {contact.id!r} cannot refer themselves")
    if referrer_id is not None:
        contact.attributes.setdefault("referred_by", referrer_id)


def apply_sent(contact: Contact, event: Event) -> None:
    """``referral.sent``, on the referrer: counts ``metrics["referrals_sent"]``."""
    contact.metrics["referrals_sent"] = contact.metrics.get("referrals_sent", 0) + 1


@hookimpl
def register_reducers(register: Callable[..., None]) -> None:
    register("referral.signup", apply_signup, name="referral.signup")
    register("referral.sent", apply_sent, name="referral.sent")


@hookimpl
def register_tables(register: Callable[..., None]) -> None:
    for table in TABLES:
        register(table)


@hookimpl
def register_event_handlers(register: Callable[..., None]) -> None:
    register("referral.signup", attribution.on_referral_signup, name="referral.attribute")
    register("signup", attribution.on_signup, name="referral.attribute_signup_code")
    register("*", attribution.on_any_event, name="referral.fingerprints")
    register("referral.reviewed", reviews.on_reviewed, name="referral.review")
    register("referral.redeem", reviews.on_redeem, name="referral.redeem")


@hookimpl
def register_actions(register: Callable[..., None]) -> None:
    register(
        "referral.code",
        actions.issue_code,
        actions.CodeParams,
        description="Give the contact a referral code (the same one if asked again)",
    )
    register(
        "referral.reward",
        actions.reward,
        actions.RewardParams,
        description="Credit the referrer of this contact, once per referred contact and kind",
    )
    register(
        "referral.approve",
        actions.approve,
        actions.ApproveParams,
        description="Approve an unflagged reward (the follow-up referral.reward enqueues)",
    )
    register(
        "referral.reverse",
        actions.reverse,
        actions.ReverseParams,
        description="Claw back this referred contact's rewards (a refund within N days)",
    )


@hookimpl
def register_facts(register: Callable[..., None]) -> None:
    for name, compute, kind in (
        ("referral.count", facts.fact_count, "number"),
        ("referral.referred_by", facts.fact_referred_by, "text"),
        ("referral.successful", facts.fact_successful, "number"),
        ("referral.balance", facts.fact_balance, "number"),
    ):
        register(name, compute, type=kind, description=compute.__doc__)


@hookimpl
def register_hookspecs(register: Callable[..., None]) -> None:
    register(fraud.Specs)


@hookimpl
def register_fraud_checks(register: Callable[..., None]) -> None:
    checks.register_builtin_checks(register)


@hookimpl
def register_commands(cli: click.Group) -> None:
    from .cli import referral

    cli.add_command(referral)


@hookimpl
def forget_contact(tables: Tables, contact_id: str, erasure: Erasure) -> dict[str, int]:
    from .erasure import forget

    return forget(tables, contact_id, erasure)
