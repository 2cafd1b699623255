"""The core's reducers: how the standard event types change a contact.

Events are folded in time order (the engine replays a contact's history when one arrives
late), so a reducer may assume it sees a contact's events oldest first.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from numbers import Real
from typing import Any

from .. import consent as channels
from ..hooks import hookimpl
from ..models import Contact, Event
from ..scores import add_points

#: Properties of ``signup`` / ``contact.created`` / ``contact.updated`` that are contact fields;
#: every other property is an attribute.
CONTACT_FIELDS = ("email", "timezone", "consent", "attributes")

_HEX32 = re.compile(r"[0-9a-f]{32}")


def _when(event: Event) -> str:
    """The event's time to the second, as metrics keep times: ``2026-11-02T10:15:00Z``."""
    return event.occurred_at_text[:19] + "Z"


def _count(contact: Contact, metric: str) -> None:
    contact.metrics[metric] = contact.metrics.get(metric, 0) + 1


def is_emitted(event: Event) -> bool:
    """Whether the engine made this event: its own ``clm.*`` events, and every event an action
    emitted (``email.sent``, ``referral.rewarded``, ``event.emit``'s ...).

    Emitted events are told apart by their id, not their type: any action may emit any type
    (``event.emit`` takes the type from a ruleset), but every emitted event gets its id from
    the dispatcher, ``"a-"`` and 32 lowercase hex digits derived from its outbox key
    (``clm_engine.dispatch``; a test holds the two together). Ids are stored with the events,
    so a re-fold sees the same answer. A CRM id of exactly that shape would be taken for the
    engine's; ids CRMs send (``evt-1042``, hashes ``h-...`` derived on ingest) are not.
    """
    if event.type.startswith("clm."):
        return True
    event_id = event.id
    return (
        event_id is not None
        and len(event_id) == 34
        and event_id.startswith("a-")
        and _HEX32.fullmatch(event_id, 2) is not None
    )


def track_activity(contact: Contact, event: Event) -> None:
    """Every event: when the contact first and last appeared, and when they last *did*
    something (``metrics.last_active_at``: events from outside the engine only, so the
    engine's own emails and effects never make an inactive contact look active)."""
    # This runs for every event, so it writes the fields directly: pydantic's __setattr__
    # costs more than the rest of the reducer (the model does not validate assignment anyway).
    fields = contact.__dict__
    if fields["created_at"] is None:
        fields["created_at"] = event.occurred_at
    fields["last_event_at"] = event.occurred_at
    metrics = contact.metrics
    metrics["events_count"] = metrics.get("events_count", 0) + 1
    if not is_emitted(event):
        metrics["last_active_at"] = _when(event)


def apply_profile(contact: Contact, event: Event) -> None:
    """``signup``, ``contact.created``, ``contact.updated``: what the CRM says about the person.

    ``email``, ``timezone``, ``consent`` (a mapping of channel to bool) and ``attributes`` are
    contact fields; any other property is an attribute. An attribute set to ``null`` is removed.
    Consent channel names are normalised and checked (:mod:`clm_engine.consent`), so
    ``{"EMAIL": true}`` is email consent and ``{"emial": true}`` an error, not a new channel.
    """
    props = event.properties
    if "email" in props:
        email = props["email"]
        Contact.model_validate({"id": contact.id, "email": email})  # raises with the reason
        contact.email = email
    if "timezone" in props:
        timezone = props["timezone"]
        Contact.model_validate({"id": contact.id, "timezone": timezone})
        contact.timezone = timezone
    consent = props.get("consent")
    if consent is not None:
        contact.consent.update(channels.consent_mapping(consent))
    attributes = dict(props.get("attributes") or {})
    attributes.update((k, v) for k, v in props.items() if k not in CONTACT_FIELDS)
    for key, value in attributes.items():
        if value is None:
            contact.attributes.pop(key, None)
        else:
            contact.attributes[key] = value
    if event.type != "contact.updated" and "signed_up_at" not in contact.metrics:
        contact.metrics["signed_up_at"] = _when(event)


def apply_purchase(contact: Contact, event: Event) -> None:
    """``purchase``: orders count, total spent, first and last order time, average order value."""
    amount = event.properties.get("amount")
    if not isinstance(amount, Real) or isinstance(amount, bool):
        raise ValueError(f"a purchase needs a numeric 'amount' property (got {amount!r})")
    metrics = contact.metrics
    orders = metrics.get("orders_count", 0) + 1
    total = round(metrics.get("total_spent", 0) + float(amount), 2)
    metrics["orders_count"] = orders
    metrics["total_spent"] = total
    metrics["average_order_value"] = round(total / orders, 2)
    metrics.setdefault("first_order_at", _when(event))
    metrics["last_order_at"] = _when(event)


def apply_email_opened(contact: Contact, event: Event) -> None:
    _count(contact, "emails_opened")
    contact.metrics["last_email_opened_at"] = _when(event)
    contact.metrics["last_engaged_at"] = _when(event)


def apply_email_clicked(contact: Contact, event: Event) -> None:
    _count(contact, "emails_clicked")
    contact.metrics["last_email_clicked_at"] = _when(event)
    contact.metrics["last_engaged_at"] = _when(event)


def apply_support_ticket(contact: Contact, event: Event) -> None:
    """``support.ticket``: counts tickets and keeps the ids of the open ones.

    A ticket with ``status: "closed"`` (or ``"resolved"``) closes the ticket of the same
    ``ticket_id``; any other status opens or keeps it open.
    """
    metrics = contact.metrics
    ticket_id = event.properties.get("ticket_id")
    status = str(event.properties.get("status", "open")).lower()
    open_tickets: list[Any] = metrics.setdefault("open_tickets", [])
    known = ticket_id is not None and (
        ticket_id in open_tickets or ticket_id in metrics.get("closed_tickets", [])
    )
    if not known:
        _count(contact, "tickets_count")
        metrics["last_ticket_at"] = _when(event)
    if ticket_id is None:
        return
    if status in ("closed", "resolved"):
        if ticket_id in open_tickets:
            open_tickets.remove(ticket_id)
        closed = metrics.setdefault("closed_tickets", [])
        if ticket_id not in closed:
            closed.append(ticket_id)
    elif ticket_id not in open_tickets:
        open_tickets.append(ticket_id)


def apply_nps(contact: Contact, event: Event) -> None:
    """``nps.answered``: the latest score (0-10) and its category."""
    score = event.properties.get("score")
    if not isinstance(score, int) or isinstance(score, bool) or not 0 <= score <= 10:
        raise ValueError(f"an NPS answer needs an integer 'score' from 0 to 10 (got {score!r})")
    category = "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"
    contact.metrics.update(nps_score=score, nps_category=category, nps_answered_at=_when(event))


def apply_unsubscribed(contact: Contact, event: Event) -> None:
    """``unsubscribed``: withdraws consent on ``properties.channel``, or on every channel when
    the event names none (see :mod:`clm_engine.consent` for why)."""
    for channel in channels.unsubscribed_channels(event.properties):
        contact.consent[channel] = False
    contact.metrics["unsubscribed_at"] = _when(event)


def apply_subscribed(contact: Contact, event: Event) -> None:
    """``subscribed``: grants consent on ``properties.channel`` (``email`` when left out)."""
    contact.consent[channels.subscribed_channel(event.properties)] = True


# -- what actions did: the engine's own clm.* events ---------------------------------------------


def apply_stage_set(contact: Contact, event: Event) -> None:
    """``clm.stage.set`` (from the ``stage.set`` action): the new stage."""
    contact.stage = event.properties["stage"]


def apply_score_add(contact: Contact, event: Event) -> None:
    """``clm.score.add`` (from ``score.add``): decay what the score was, add, then cap.

    The half-life is recorded with the score (:mod:`clm_engine.scores`), so conditions read
    the score decayed to their own time, not as it was at its last change.
    """
    props = event.properties
    add_points(
        contact,
        props["score"],
        props["points"],
        at=event.occurred_at,
        at_text=_when(event),
        cap=props.get("cap"),
        half_life=props.get("half_life_seconds"),
    )


def apply_tag_add(contact: Contact, event: Event) -> None:
    contact.add_tag(event.properties["tag"])


def apply_tag_remove(contact: Contact, event: Event) -> None:
    contact.remove_tag(event.properties["tag"])


def apply_attribute_set(contact: Contact, event: Event) -> None:
    name, value = event.properties["name"], event.properties.get("value")
    if value is None:
        contact.attributes.pop(name, None)
    else:
        contact.attributes[name] = value


@hookimpl
def register_reducers(register: Callable[..., None]) -> None:
    register("*", track_activity, name="core.track_activity")
    for event_type in ("signup", "contact.created", "contact.updated"):
        register(event_type, apply_profile, name=f"core.profile[{event_type}]")
    register("purchase", apply_purchase, name="core.purchase")
    register("email.opened", apply_email_opened, name="core.email_opened")
    register("email.clicked", apply_email_clicked, name="core.email_clicked")
    register("support.ticket", apply_support_ticket, name="core.support_ticket")
    register("nps.answered", apply_nps, name="core.nps")
    register("unsubscribed", apply_unsubscribed, name="core.unsubscribed")
    register("subscribed", apply_subscribed, name="core.subscribed")
    register("clm.stage.set", apply_stage_set, name="core.stage_set")
    register("clm.score.add", apply_score_add, name="core.score_add")
    register("clm.tag.add", apply_tag_add, name="core.tag_add")
    register("clm.tag.remove", apply_tag_remove, name="core.tag_remove")
    register("clm.attribute.set", apply_attribute_set, name="core.attribute_set")
