"""Replies: a ``STOP`` withdraws SMS consent, a ``START`` gives it back.

An inbound SMS reaches the engine as an event ``sms.inbound`` (your provider's inbound
webhook, mapped to ``{"contact_id": ..., "type": "sms.inbound", "properties": {"from":
"+33612345678", "body": "STOP"}}``, through ``clm ingest`` or ``clm serve``). Its reducer:

* the body's first word, case and punctuation aside, is a stop word (``STOP``, ``STOPALL``,
  ``UNSUBSCRIBE``, ``CANCEL``, ``END``, ``QUIT``, ``ARRET``/``ARRÊT``, ``STOPP``, ``BAJA``):
  ``consent.sms`` becomes false and ``metrics.sms_opted_out_at`` records when. The SMS policy
  then vetoes every later ``sms.send`` to the contact, transactional ones too (carriers
  require a STOP to stop everything from the sender), including those already queued;
* a start word (``START``, ``UNSTOP``, ``YES``, ``SUBSCRIBE``): ``consent.sms`` is true again
  and the opt-out is lifted: the person asked for messages;
* anything else is only counted (``metrics.sms_replies``).

A reducer, not a handler: consent is the contact's state, folded from its events, so a late
STOP re-judges what came after it like any other event.
"""

from __future__ import annotations

import unicodedata

from clm_engine import Contact, Event

STOP_WORDS = frozenset(
    {"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "arret", "stopp", "baja"}
)
START_WORDS = frozenset({"start", "unstop", "yes", "subscribe"})


def keyword(body: str) -> str:
    """The first word of a reply, lower case, accents and punctuation dropped."""
    words = body.strip().split()
    if not words:
        return ""
    first = unicodedata.normalize("NFKD", words[0].lower())
    return "".join(c for c in first if c.isalnum() and not unicodedata.combining(c))


def apply_inbound(contact: Contact, event: Event) -> None:
    """``sms.inbound``: STOP and START replies change ``consent.sms``."""
    body = event.properties.get("body")
    if not isinstance(body, str):
        raise ValueError(f"an sms.inbound event needs a 'body' text property (got {body!r})")
    contact.metrics["sms_replies"] = contact.metrics.get("sms_replies", 0) + 1
    word = keyword(body)
    when = event.occurred_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    if word in STOP_WORDS:
        contact.consent["sms"] = False
        contact.metrics["sms_opted_out_at"] = when
    elif word in START_WORDS:
        contact.consent["sms"] = True
        contact.metrics.pop("sms_opted_out_at", None)
