"""The SQL of experiment reports: each exposure with the goal events that followed it, and
the arms' exposure counts, in one statement each, for SQLite and PostgreSQL alike.

The statements are the same standard SQL on both stores (a ``LEFT JOIN`` of the exposures with
the contact's events of the goal type at or after the exposure); only the placeholder differs.
Times are the fixed-width UTC text both stores keep, so text order is time order. What cannot
be said portably (the goal's window, its ``where`` condition in the rule language, the revenue
property) is applied by ``clm_engine.experiments.report`` to the rows this returns.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ..experiments.exposures import TABLE

_JOINED = f"""
    SELECT x.arm, x.contact_id, x.exposed_at, e.id, e.occurred_at, e.properties
    FROM {TABLE} x
    LEFT JOIN events e
      ON e.contact_id = x.contact_id AND e.type = {{p}} AND e.occurred_at >= x.exposed_at
    WHERE x.experiment = {{p}}
    ORDER BY x.arm, x.contact_id, e.occurred_at
"""

_ARMS = f"""
    SELECT arm, count(*), min(exposed_at), max(exposed_at)
    FROM {TABLE} WHERE experiment = {{p}} GROUP BY arm ORDER BY arm
"""

_NAMES = f"SELECT DISTINCT experiment FROM {TABLE} ORDER BY experiment"


def _query(store: Any, template: str, params: list[Any]) -> list[Any]:
    if hasattr(store, "_all"):  # PostgreSQL (psycopg's %s placeholders)
        return list(store._all(template.format(p="%s"), params))
    return list(store.conn.execute(template.format(p="?"), params).fetchall())


def exposed_arms(store: Any, experiment: str) -> list[tuple[str, int, str, str]]:
    """``(arm, exposed contacts, first exposure, last exposure)`` per arm, by arm name."""
    return [
        (str(a), int(n), str(lo), str(hi)) for a, n, lo, hi in _query(store, _ARMS, [experiment])
    ]


def exposures_with_goals(
    store: Any, experiment: str, goal_type: str
) -> Iterator[tuple[str, str, str, str | None, str | None, dict[str, Any] | None]]:
    """Each exposure ``(arm, contact_id, exposed_at, ...)`` with one goal event after it
    ``(..., event_id, occurred_at, properties)`` per row, or ``None``s when it has none."""
    for arm, contact, exposed, event_id, occurred, properties in _query(
        store, _JOINED, [goal_type, experiment]
    ):
        if isinstance(properties, str):
            properties = json.loads(properties)
        yield arm, contact, exposed, event_id, occurred, properties


def experiment_names(store: Any) -> list[str]:
    """Every experiment with at least one exposure in the store."""
    return [str(row[0]) for row in _query(store, _NAMES, [])]
