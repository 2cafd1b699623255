"""Whether a database is a production one, and the virtual time of a test environment.

Test-only modes (``clm run --clock virtual``, which sends real email on an accelerated clock)
refuse to start against production. A database is production when either

- ``clm migrate --production`` marked it: the store's runtime status ``environment`` says
  ``{"production": true}`` (``clm migrate --not-production`` removes the mark), or
- the command runs with ``CLM_ENVIRONMENT=production`` in its environment.

Either is enough; neither is a guess from the database's name or host. ``--allow-production``
on the command overrides the refusal, on purpose and visibly.

A virtual clock's time is recorded too (``virtual_clock``): a restart resumes from it, so that
time in a test database never moves backward (anchors, schedule slots and deferrals are stored
in that time).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .models import utc_text
from .store import Store

ENVIRONMENT_KEY = "environment"
VIRTUAL_CLOCK_KEY = "virtual_clock"
ENVIRONMENT_VARIABLE = "CLM_ENVIRONMENT"


def production_reason(store: Store, environ: Mapping[str, str] | None = None) -> str | None:
    """Why this database counts as production (for an error message), or None."""
    environ = os.environ if environ is None else environ
    if environ.get(ENVIRONMENT_VARIABLE, "").strip().lower() == "production":
        return f"${ENVIRONMENT_VARIABLE} is 'production'"
    said = store.read().status().get(ENVIRONMENT_KEY)
    if said is not None and isinstance(said[0], dict) and said[0].get("production"):
        return f"the database was marked production (clm migrate --production, {said[1][:19]}Z)"
    return None


def mark_production(store: Store, production: bool, at: datetime) -> None:
    """Mark the database production, or remove the mark (``clm migrate``)."""
    with store.write() as tx:
        tx.set_status(ENVIRONMENT_KEY, {"production": production}, utc_text(at))


def virtual_time(store: Store) -> datetime | None:
    """The latest time a virtual clock reached on this database, or None."""
    said = store.read().status().get(VIRTUAL_CLOCK_KEY)
    if said is None or not isinstance(said[0], dict) or "now" not in said[0]:
        return None
    return datetime.fromisoformat(str(said[0]["now"]).replace("Z", "+00:00"))


def virtual_clock_status(now: datetime, speed: float) -> dict[str, Any]:
    """What ``clm run --clock virtual`` records as it runs (``clm status`` shows it)."""
    return {"now": utc_text(now), "speed": speed}
