"""What ``make demo`` prints about email: messages by sequence and step, deferrals and
vetoes by reason, and one rendered message to open.

``scripts/demo.py`` calls :func:`summary` after its ingest and dispatch. The demo's file
transport must write into the demo's folder: run those commands with
``CLM_EMAIL_OUTBOX=.demo/outbox`` in their environment (see ``plugins/email/README.md``).
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

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
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        steps = conn.execute(
            "SELECT coalesce(sequence, '(rules)'), coalesce(step, template), status, count(*) "
            "FROM email_messages GROUP BY 1, 2, 3 ORDER BY 1, min(id), 3"
        ).fetchall()
        outbox = conn.execute(
            "SELECT status, note FROM outbox WHERE action = 'email.send' "
            "AND (status IN ('vetoed', 'dead') OR (status = 'pending' AND note IS NOT NULL))"
        ).fetchall()
        enrollments = conn.execute(
            "SELECT sequence, status, coalesce(exit_reason, ''), count(*) FROM email_enrollments "
            "GROUP BY 1, 2, 3 ORDER BY 1, 4 DESC"
        ).fetchall()
    finally:
        conn.close()
    deferred: Counter[str] = Counter()
    vetoed: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for status, note in outbox:
        if status == "pending" and (note or "").startswith("deferred"):
            deferred[_reason(note)] += 1
        elif status == "pending":
            failed["retrying: " + _reason(note).split(";")[0]] += 1
        elif status == "vetoed":
            vetoed[_reason(note)] += 1
        else:
            failed[_reason(note)[:100]] += 1
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
