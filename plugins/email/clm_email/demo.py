"""What ``make demo`` prints about email: messages by sequence and step, deferrals and
vetoes by reason, and one rendered message to open.

``scripts/demo.py`` calls :func:`summary` after its ingest and dispatch. The demo's file
transport must write into the demo's folder: run those commands with
``CLM_EMAIL_OUTBOX=.demo/outbox`` in their environment (see ``plugins/email/README.md``).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from clm_engine import Engine

_ADDRESS = re.compile(r"\S+@\S+")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+Z?")


def _reason(note: str | None) -> str:
    """A note without what differs per contact (addresses, times), so equal reasons group."""
    text = note or "(no reason recorded)"
    if text.startswith("deferred to ") and ": " in text:
        text = text.split(": ", 1)[1]
    text = _ADDRESS.sub("<address>", text)
    text = _TIME.sub("<time>", text)
    return re.sub(r"\([A-Za-z]+/[A-Za-z_/+-]+\)", "(contact's timezone)", text)


def collect(db_path: str, outbox_dir: str) -> dict[str, Any]:
    """The figures :func:`summary` prints, as data (for tests and ``--json`` callers)."""
    import clm_email

    with Engine(db_path, plugins={"email": clm_email}) as engine:
        tables = engine.store.tables
        messages = tables["email_messages"].rows(
            columns=["id", "sequence", "step", "template", "status"], order_by=["id"]
        )
        enrolled = tables["email_enrollments"].aggregate(
            group_by=["sequence", "status", "exit_reason"]
        )
        outcomes = engine.store.outcome_counts("email.send")
    # Messages by (sequence, step, status): steps in the order they were first sent.
    counts: Counter[tuple[str, str, str]] = Counter()
    first: dict[tuple[str, str], int] = {}
    for row in messages:
        where = (row["sequence"] or "(rules)", row["step"] or row["template"])
        first.setdefault(where, row["id"])
        counts[(*where, row["status"])] += 1
    steps = sorted(
        ((s, t, st, n) for (s, t, st), n in counts.items()),
        key=lambda item: (item[0], first[(item[0], item[1])], item[2] or ""),
    )
    merged: Counter[tuple[str, str, str]] = Counter()
    for row in enrolled:
        merged[(row["sequence"], row["status"], row["exit_reason"] or "")] += row["count"]
    enrollments = sorted(
        ((s, st, r, n) for (s, st, r), n in merged.items()), key=lambda item: (item[0], -item[3])
    )
    deferred: Counter[str] = Counter()
    vetoed: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for status, note, count in outcomes:
        if status == "pending" and (note or "").startswith("deferred"):
            deferred[_reason(note)] += count
        elif status == "pending" and note is not None:
            failed["retrying: " + _reason(note).split(";")[0]] += count
        elif status == "vetoed":
            vetoed[_reason(note)] += count
        elif status == "dead":
            failed[_reason(note)[:100]] += count
    folder = Path(outbox_dir)
    files = sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return {
        "messages": [{"sequence": s, "step": t, "status": st, "count": n} for s, t, st, n in steps],
        "enrollments": [
            {"sequence": s, "status": st, "reason": r, "count": n} for s, st, r, n in enrollments
        ],
        "deferred": dict(deferred.most_common()),
        "vetoed": dict(vetoed.most_common()),
        "failed": dict(failed.most_common()),
        "eml_files": len(files),
        "example": str(files[-1]) if files else None,
    }


def _shown(path: str) -> str:
    """A path relative to the working directory when it is under it (shorter to read)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def summary(db_path: str, outbox_dir: str) -> str:
    """Printable text: messages by sequence and step, deferrals and vetoes by reason, one file."""
    data = collect(db_path, outbox_dir)
    lines = ["Email messages by sequence and step:"]
    by_step: dict[tuple[str, str], dict[str, int]] = {}
    for row in data["messages"]:
        by_step.setdefault((row["sequence"], row["step"]), {})[row["status"]] = row["count"]
    for (sequence, step), counts in by_step.items():
        detail = ", ".join(f"{n:,} {status}" for status, n in sorted(counts.items()))
        lines.append(f"  {sequence:<12} {step:<16} {detail}")
    if not by_step:
        lines.append("  (none)")
    if data["enrollments"]:
        lines.append("Sequence enrollments:")
        for row in data["enrollments"]:
            why = f" ({row['reason']})" if row["reason"] and row["reason"] != row["status"] else ""
            lines.append(f"  {row['sequence']:<12} {row['count']:>6,} {row['status']}{why}")
    for title, key in (
        ("Deferred now, by reason", "deferred"),
        ("Vetoed, by reason", "vetoed"),
        ("Failed", "failed"),
    ):
        if data[key]:
            lines.append(f"{title}:")
            lines.extend(f"  {n:>6,}  {reason}" for reason, n in data[key].items())
    lines.append(f"{data['eml_files']:,} .eml files in {_shown(outbox_dir)}")
    if data["example"]:
        lines.append(f"One rendered message: {_shown(data['example'])}")
    return "\n".join(lines)
