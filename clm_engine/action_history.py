"""The story of an outbox row, for people: queued, deferred, retried, then what it came to.

An outbox row holds only its latest status and note; what the dispatcher did on the way is in
``action_history`` (``ActionStep``, written in the dispatcher's own transactions). This module
puts the two together in the one shape ``clm explain`` and ``clm email queue`` show.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from .store import ActionStep, OutboxRow

#: How a step reads in the timeline: the final statuses keep their own names, but an external
#: action that ran is "sent" (its effect left the engine).
_SENT = "sent"


def timeline(
    row: OutboxRow, steps: Sequence[ActionStep], external: Collection[str] = ()
) -> list[dict[str, Any]]:
    """The row's history as ``{"at", "event", "note", "due_at", "until"}`` dicts, oldest
    first: when it was queued (and for when), then each step the dispatcher recorded (with the
    time the row was due as it was taken up, and for a deferral or retry, until when).
    ``external`` names the external actions (their ``done`` reads ``sent``)."""
    first_due = steps[0].due_at if steps else row.due_at
    entries: list[dict[str, Any]] = [
        {
            "at": _short(row.created_at) if row.created_at else None,
            "event": "queued",
            "note": f"due {_short(first_due)}",
            "due_at": _short(first_due),
            "until": None,
        }
    ]
    for step in steps:
        event = _SENT if step.kind == "done" and row.action in external else step.kind
        entries.append(
            {
                "at": _short(step.at),
                "event": event,
                "note": step.note,
                "due_at": _short(step.due_at),
                "until": _short(step.until) if step.until else None,
            }
        )
    return entries


def _short(text: str) -> str:
    """UTC text to the second, with its Z."""
    return text[:19] + "Z"
