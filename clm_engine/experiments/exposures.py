"""Who was exposed to which arm of which experiment, and when: one row per (experiment,
contact), the contact's *first* exposure.

The row is written in the transaction that takes the decision (so it commits with the outbox
rows, or not at all), through the table API, so every store keeps it. Once written, the arm is
sticky: a later decision for the same contact reads it back and keeps the contact in its arm,
even if the weights have changed since (only contacts not yet exposed follow new weights). A
late event that exposes the contact earlier than the recorded time moves the time back (the
arm stays).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..models import utc_text
from ..store import Column, Index, Table

TABLE = "experiment_exposures"

EXPOSURES = Table(
    name=TABLE,
    description="Each contact's first exposure to each experiment: its arm, when, which rule",
    columns=(
        Column("experiment", "text", nullable=False),
        Column("contact_id", "text", nullable=False),
        Column("arm", "text", nullable=False),
        Column("holdout", "boolean", nullable=False, default=False),
        Column("exposed_at", "timestamp", nullable=False),
        Column("ruleset", "text", nullable=False),
        Column("rule", "text", nullable=False),
        Column("occurrence", "text", nullable=False),
        Column("version", "integer"),
    ),
    primary_key=("experiment", "contact_id"),
    indexes=(Index(("experiment", "arm")),),
)


def recorded_arm(tables: Any, experiment: str, contact_id: str) -> dict[str, Any] | None:
    """The contact's exposure row in ``experiment``, or None (also when there is no store)."""
    if tables is None or TABLE not in tables:
        return None
    row: dict[str, Any] | None = tables[TABLE].one(
        {"experiment": experiment, "contact_id": contact_id}
    )
    return row


def record_exposure(
    tables: Any,
    *,
    experiment: str,
    contact_id: str,
    arm: str,
    holdout: bool,
    at: datetime,
    ruleset: str,
    rule: str,
    occurrence: str,
    version: int | None,
    existing: dict[str, Any] | None,
) -> None:
    """Write the first exposure, or move a recorded one back to an earlier ``at``."""
    access = tables[TABLE]
    when = utc_text(at)
    if existing is None:
        access.insert(
            {
                "experiment": experiment,
                "contact_id": contact_id,
                "arm": arm,
                "holdout": holdout,
                "exposed_at": when,
                "ruleset": ruleset,
                "rule": rule,
                "occurrence": occurrence,
                "version": version,
            },
            on_conflict="ignore",
        )
    elif when < existing["exposed_at"]:
        access.update(
            {"experiment": experiment, "contact_id": contact_id},
            {"exposed_at": when, "occurrence": occurrence, "rule": rule, "ruleset": ruleset},
        )
