"""Marketing consent channels: the one list of them, and how events name them.

Consent is a mapping of channel to ``true`` / ``false`` on the contact (``contact.consent``),
written by the core's reducers (``signup``, ``contact.created``, ``contact.updated``,
``subscribed``, ``unsubscribed``) and read by policies (the email plugin vetoes a marketing
``email.send`` unless ``consent["email"]`` is true). Both sides must agree on the names, so
CRMs' spellings are normalised here: ``"EMAIL"`` and ``" Email "`` are ``email``. A name that
is not a known channel is an error rather than a new key: ``consent["emial"] = false`` would
leave email consent on without anyone noticing.

Why the asymmetry between withdrawing and granting: an ``unsubscribed`` that names no channel
(no ``channel`` property, ``null`` or ``""``) withdraws *every* channel, because an
unsubscribe we cannot place must stop marketing, not guess the one channel it meant. A
``subscribed`` that names none grants ``email`` (the documented default CRMs rely on), but an
explicit ``null`` is refused: consent is given per channel, and we never record a grant the
person did not give.

Consent covers marketing. What a channel plugin exempts (the email plugin's
``exempt_categories``, ``transactional`` by default: receipts, password resets) does not need
it; a hard bounce or complaint still stops those (the email plugin's suppressions).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Every marketing channel consent is recorded for. ``mail`` is postal mail; ``email`` is the
#: key the email plugin's policy reads.
CHANNELS: tuple[str, ...] = ("email", "sms", "push", "whatsapp", "phone", "mail")

#: What ``subscribed`` grants when it names no channel.
DEFAULT_CHANNEL = "email"

_KNOWN = frozenset(CHANNELS)


def channel_name(value: Any) -> str:
    """The channel ``value`` names, normalised (``" EMAIL "`` -> ``email``).

    Raises ``ValueError`` naming the known channels for anything else: a reducer that raises
    makes the engine record the event as failed, with this message, so it can be fixed and
    ingested again.
    """
    if not isinstance(value, str):
        raise ValueError(
            f"a consent channel is a name ({_known()}), got {type(value).__name__} {value!r}"
        )
    name = value.strip().lower()
    if name not in _KNOWN:
        raise ValueError(f"unknown consent channel {value!r}: the channels are {_known()}")
    return name


def unsubscribed_channels(properties: Mapping[str, Any]) -> tuple[str, ...]:
    """The channels an ``unsubscribed`` event withdraws: the one it names, or all of them."""
    value = properties.get("channel")
    if value is None or (isinstance(value, str) and not value.strip()):
        return CHANNELS
    return (channel_name(value),)


def subscribed_channel(properties: Mapping[str, Any]) -> str:
    """The channel a ``subscribed`` event grants: the one it names, ``email`` if it has none."""
    if "channel" not in properties:
        return DEFAULT_CHANNEL
    value = properties["channel"]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(
            f"a subscription must name its channel ({_known()}); leave 'channel' out for "
            f"{DEFAULT_CHANNEL!r}"
        )
    return channel_name(value)


def consent_mapping(value: Any) -> dict[str, bool]:
    """A profile event's ``consent`` property, with its channel names normalised.

    Two spellings of one channel that disagree (``{"email": true, "EMAIL": false}``) are an
    error: there is no telling which the CRM meant.
    """
    if not isinstance(value, Mapping):
        raise ValueError("'consent' must map channel names to true or false")
    found: dict[str, bool] = {}
    for key, granted in value.items():
        if not isinstance(granted, bool):
            raise ValueError(
                f"'consent' must map channel names to true or false (got {key!r}: {granted!r})"
            )
        name = channel_name(key)
        if found.get(name, granted) is not granted:
            raise ValueError(f"'consent' gives channel {name!r} both true and false")
        found[name] = granted
    return found


def _known() -> str:
    return ", ".join(CHANNELS)
