"""clm-sms: the SMS channel of clm-engine, built on the public plugin hooks only.

* **Action** ``sms.send`` (external): a text template rendered in the bounded sandbox, the
  contact's number validated and written in E.164 (``phonenumbers``), its encoding and
  segments computed (GSM-7 with the extension table, or UCS-2), delivered by a provider.
* **Providers**: ``file`` (the default: JSON lines) and ``http`` (the common shape of SMS
  APIs); more through the plugin's own hook ``register_sms_providers``.
* **Policy** (``dispatch_policy``): consent, STOP replies, frequency caps and quiet hours, and
  the cross-channel policies of ``clm_engine.channels``; deferred, never dropped.
* **Replies**: ``sms.inbound`` events; STOP withdraws ``consent.sms``, START restores it.
* **Command** ``clm sms segments TEXT``: the encoding and the parts a text takes.

``plugins/sms/README.md`` is the user documentation.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from clm_engine import Contact, Defer, Tables, Veto, hookimpl

from . import actions, inbound, policy, providers, settings

if TYPE_CHECKING:
    import click


@hookimpl
def register_hookspecs(register: Callable[..., None]) -> None:
    register(providers.Specs)


@hookimpl
def register_sms_providers(register: Callable[..., None]) -> None:
    providers.builtin_providers(register)


@hookimpl
def register_actions(register: Callable[..., None]) -> None:
    register(
        "sms.send",
        actions.send,
        actions.SendParams,
        description="render a text message for the contact and send it through the provider",
        external=True,
        simulate=actions.simulate_send,
    )


@hookimpl
def register_reducers(register: Callable[..., None]) -> None:
    register("sms.inbound", inbound.apply_inbound, name="sms.inbound")


@hookimpl
def dispatch_policy(
    action: str,
    params: dict[str, Any],
    contact: Contact,
    now: datetime,
    tables: Tables,
    in_flight: Callable[[], list[Any]],
) -> Veto | Defer | None:
    if action != "sms.send":
        return None
    # Settings that cannot be read raise: the engine then vetoes, naming this plugin.
    return policy.decide(
        params=params,
        contact=contact,
        now=now,
        tables=tables,
        settings=settings.resolve_settings(),
        in_flight=in_flight,
    )


@hookimpl
def register_commands(cli: click.Group) -> None:
    from .cli import sms

    cli.add_command(sms)
