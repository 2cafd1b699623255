"""clm-email: the email channel of clm-engine, built on the public plugin hooks only.

* **Templates**: ``email_template`` documents beside the rulesets (Jinja2, sandboxed): subject,
  text and HTML parts, personal fields with fallbacks; checked when rulesets are validated.
* **Actions**: ``email.send`` (external: rendered and delivered outside the engine's write
  lock), ``email.start_sequence`` / ``email.stop_sequence`` for drip ``sequence`` documents.
* **Delivery**: the ``file`` transport (``.eml`` files, the default), ``smtp``, and any a
  plugin adds through this plugin's own hook, ``register_email_transports`` (added to each
  engine's plugin manager; see ``clm_email.hookspecs``).
* **Policy** (``dispatch_policy``): consent, suppressions, frequency caps and quiet hours;
  a capped or quiet-hours message is deferred, never dropped.
* **Its own tables** (declared with ``register_tables``, for any store), kept from events by
  event handlers; GDPR erasure of a contact's rows.

``plugins/email/README.md`` is the user documentation.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from clm_engine import Contact, Defer, Erasure, Event, Tables, Veto, hookimpl

from . import actions, hookspecs, policy, sequences, settings, store, templates, transports

if TYPE_CHECKING:
    import click

BOUNCE_TYPES = ("hard", "soft")

TABLES = store.TABLES


def _when(event: Event) -> str:
    return event.occurred_at.strftime("%Y-%m-%dT%H:%M:%SZ")


def apply_bounce(contact: Contact, event: Event) -> None:
    """``email.bounced``: counts bounces; a hard bounce withdraws email consent.

    Properties: ``type`` (``"hard"`` or ``"soft"``, required) and ``address`` (optional, the
    address that bounced). Every bounce adds one to ``metrics["email_bounces"]``; a hard bounce
    sets ``consent["email"]`` to false and ``metrics["email_hard_bounced_at"]`` to its time. A
    later ``subscribed`` event can grant consent again.
    """
    kind = event.properties.get("type")
    if kind not in BOUNCE_TYPES:
        raise ValueError(
            f"an email bounce needs a 'type' property, 'hard' or 'soft' (got {kind!r})"
        )
    address = event.properties.get("address")
    if address is not None and not (isinstance(address, str) and "@" in address):
        raise ValueError(f"an email bounce's 'address' must be an email address (got {address!r})")
    contact.metrics["email_bounces"] = contact.metrics.get("email_bounces", 0) + 1
    if kind == "hard":
        contact.consent["email"] = False
        contact.metrics["email_hard_bounced_at"] = _when(event)


def remember_product(contact: Contact, event: Event) -> None:
    """``purchase``: the last product bought (its ``name``), for templates' ``{{ product }}``."""
    name = event.properties.get("name")
    if isinstance(name, str) and name:
        contact.metrics["last_product"] = name


def count_sent(contact: Contact, event: Event) -> None:
    """``email.sent``: how many emails the contact was sent, and when the last one went."""
    contact.metrics["emails_sent"] = contact.metrics.get("emails_sent", 0) + 1
    contact.metrics["last_email_sent_at"] = _when(event)


@hookimpl
def register_reducers(register: Callable[..., None]) -> None:
    register("email.bounced", apply_bounce, name="email.bounced")
    register("purchase", remember_product, name="email.remember_product")
    register("email.sent", count_sent, name="email.count_sent")


@hookimpl
def register_hookspecs(register: Callable[..., None]) -> None:
    register(hookspecs)


@hookimpl
def register_email_transports(register: Callable[..., None]) -> None:
    transports.builtin_transports(register)


@hookimpl
def register_tables(register: Callable[..., None]) -> None:
    for table in TABLES:
        register(table)


@hookimpl
def forget_contact(tables: Tables, contact_id: str, erasure: Erasure) -> dict[str, int]:
    return store.forget(tables, contact_id, erasure)


@hookimpl
def register_event_handlers(register: Callable[..., None]) -> None:
    register("email.sent", store.on_sent, name="email.log_sent")
    register("email.failed", store.on_failed, name="email.log_failed")
    register("email.bounced", store.on_bounced, name="email.log_bounced")
    register("unsubscribed", store.on_unsubscribed, name="email.unsubscribed")
    register("subscribed", store.on_subscribed, name="email.subscribed")
    register("*", store.on_any_event, name="email.sequence_exits")


@hookimpl
def register_documents(register: Callable[..., None]) -> None:
    register(
        templates.KIND,
        templates.EmailTemplate,
        check=lambda document, context: templates.check_template(document),
        description="an email template: subject, text and HTML parts (Jinja2, sandboxed)",
    )
    register(
        sequences.KIND,
        sequences.Sequence,
        check=sequences.check_sequence,
        warn=sequences.warn_sequence,
        description="an email drip sequence: steps with delays, exit conditions",
    )


@hookimpl
def register_actions(register: Callable[..., None]) -> None:
    register(
        "email.send",
        actions.send,
        actions.SendParams,
        description="render an email template for the contact and send it",
        external=True,
        simulate=actions.simulate_send,
    )
    register(
        "email.start_sequence",
        actions.start_sequence,
        actions.StartParams,
        description="enroll the contact in a drip sequence",
    )
    register(
        "email.stop_sequence",
        actions.stop_sequence,
        actions.StopParams,
        description="take the contact out of a drip sequence (or all of them)",
    )
    register(
        "email.sequence_step",
        actions.sequence_step,
        actions.StepParams,
        description="one step of a drip sequence (enqueued by the sequence, not by rules)",
    )


@hookimpl
def dispatch_policy(
    action: str,
    params: dict[str, Any],
    contact: Contact,
    now: datetime,
    tables: Tables,
    in_flight: Callable[[], list[Any]],
) -> Veto | Defer | None:
    if action != "email.send":
        return None
    # Settings that cannot be read raise: the engine then vetoes, naming this plugin (a
    # message whose consent or caps could not be checked does not go out).
    return policy.decide(
        params=params,
        contact=contact,
        now=now,
        tables=tables,
        settings=settings.resolve_settings(),
        claimed=in_flight,
    )


@hookimpl
def register_commands(cli: click.Group) -> None:
    from .cli import email

    cli.add_command(email)


@hookimpl
def check_unsubscribe_token(contact_id: str, token: str) -> bool:
    """The links this plugin signs (``List-Unsubscribe`` and ``{{ unsubscribe_url }}``): ``clm
    serve``'s ``/v1/unsubscribe`` checks them here, with the secret the links were made with
    (``CLM_EMAIL_UNSUBSCRIBE_SECRET``)."""
    return templates.verify_unsubscribe_token(contact_id, token, settings.unsubscribe_secret())
