"""clm-webhook: post signed JSON to any HTTP endpoint from clm-engine rules.

* **Action** ``webhook.post`` (external): a JSON body whose strings are sandboxed templates,
  signed with HMAC-SHA256 and a timestamp (``clm_webhook.signing``), an ``Idempotency-Key``
  header carrying the outbox key, a timeout, retries with backoff through the outbox for
  timeouts, 429 and 5xx, an immediate failure for other 4xx.
* **No SSRF**: private, loopback and link-local targets and redirects are refused unless the
  settings allow them (``clm_webhook.network``).
* **Policy**: a post whose ``category`` a cross-channel policy covers (``clm_engine.channels``)
  is counted and deferred like an email or an SMS.

``plugins/webhook/README.md`` is the user documentation.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from clm_engine import Contact, Defer, Tables, channels, hookimpl

from . import actions


@hookimpl
def register_actions(register: Callable[..., None]) -> None:
    register(
        "webhook.post",
        actions.post,
        actions.PostParams,
        description="post a signed JSON body to an HTTP endpoint (retried with backoff)",
        external=True,
        simulate=actions.simulate_post,
    )


@hookimpl
def dispatch_policy(
    action: str,
    params: dict[str, Any],
    contact: Contact,
    now: datetime,
    tables: Tables,
    in_flight: Callable[[], list[Any]],
) -> Defer | None:
    if action != "webhook.post":
        return None
    return channels.decide(
        action=action, params=params, contact=contact, now=now, tables=tables, in_flight=in_flight
    )
