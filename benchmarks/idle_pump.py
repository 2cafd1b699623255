"""What does an idle pump cost as contacts grow? `clm run` ticks every few seconds.

Run: ``.venv/bin/python benchmarks/idle_pump.py [--contacts 10000] [--factor 10]``

Two stores, one with ``--contacts`` contacts and one with ``factor`` times as many, spread over
six timezones, each with a weekly rule in the contacts' own timezones (``"timezone":
"contact"``) and nothing due. Each ``Engine.tick()`` then only has to learn there is nothing to
do; the figure is its time, and the ratio of the larger store's to the smaller's (1.0 is the
target: an idle pump should not cost more because there are more contacts).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ["CLM_LOAD_PLUGINS"] = ""  # the core alone: figures comparable run to run

from clm_engine import Engine, VirtualClock

ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
]
WEEKLY = {
    "ruleset": "weekly",
    "version": 1,
    "rules": [
        {
            "id": "monday",
            "when": {"schedule": "0 9 * * MON", "timezone": "contact"},
            "then": [{"action": "tag.add", "with": {"tag": "week"}}],
        }
    ],
}


def idle_tick_seconds(folder: Path, contacts: int, repeat: int) -> float:
    rules = folder / "weekly.json"
    rules.write_text(json.dumps(WEEKLY))
    clock = VirtualClock(datetime(2026, 11, 3, 12, tzinfo=UTC))  # a Tuesday: nothing due
    with Engine(folder / "clm.db", clock=clock, rulesets=[rules]) as engine:
        for start in range(0, contacts, 10_000):
            engine.ingest_many(
                {
                    "contact_id": f"c{n:07d}",
                    "type": "signup",
                    "occurred_at": "2026-11-01T10:00:00Z",
                    "properties": {"timezone": ZONES[n % len(ZONES)]},
                }
                for n in range(start, min(contacts, start + 10_000))
            )
        engine.tick()  # first sight of the schedule: its clock starts
        began = time.perf_counter()
        for _ in range(repeat):
            clock.advance(seconds=5)
            report = engine.tick()
            assert report.slots_run == 0 and report.dispatched.total == 0
        return (time.perf_counter() - began) / repeat


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args(argv)
    sizes = [args.contacts, args.contacts * args.factor]
    figures = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="clm-pump-") as folder:
            figures.append(idle_tick_seconds(Path(folder), size, args.repeat))
    for size, seconds in zip(sizes, figures, strict=True):
        print(f"{size:>10,} contacts: idle pump {seconds * 1e6:8.0f} us")
    ratio = figures[1] / figures[0]
    print(f"ratio {sizes[1]:,} / {sizes[0]:,} contacts: {ratio:.2f}x (target about 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
