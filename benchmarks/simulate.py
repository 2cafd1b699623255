"""How fast does ``clm simulate`` replay a quarter of history for 10,000 contacts?

Run: ``.venv/bin/python benchmarks/simulate.py [--contacts 10000] [--days 90] [--step 1h]
[--profile]``

The history is ``synthetic.generate_events(contacts, months=3)`` (about 150,000 events with
its realistic disorder: late events and resent duplicates), parsed once (timed separately:
``clm simulate`` pays it too, once per run). The simulation then replays ``--days`` days of it
against the core's example rulesets in ``rulesets/`` (the ones that need no plugin: the
figures stay comparable run to run) on a virtual clock, exactly as
``clm simulate`` does: a scratch store in a temporary directory, an ingest batch and a tick
per step, external actions recorded and not run. Core only (``CLM_LOAD_PLUGINS=""``).

Printed: events replayed, fires and actions, wall time, simulated days per second, and the
time per tick. The target is under 60 s for 90 days. ``--profile`` runs the simulation under
pyinstrument and prints where the time goes.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import timedelta
from pathlib import Path

# Core only: must be set before the engine loads its plugins (once per process).
os.environ["CLM_LOAD_PLUGINS"] = ""

from clm_engine.simulation import EventHistory, parse_step, simulate
from clm_engine.synthetic import DEFAULT_START, generate_events

EXAMPLES = Path(__file__).resolve().parent.parent / "rulesets"
CORE_EXAMPLES = ("churn-risk", "engagement-timers", "lead-scoring", "lifecycle-stages")
#: The example rulesets that use the core alone (the others need the email, referral and
#: warranty plugins, which this benchmark does not load).
RULESETS = [EXAMPLES / f"{name}.json" for name in CORE_EXAMPLES]
TARGET_SECONDS = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--step", default="1h", help="15m, 1h, 1d (default 1h)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="profile with pyinstrument")
    args = parser.parse_args()
    step = parse_step(args.step)

    began = time.perf_counter()
    history = EventHistory.from_items(generate_events(args.contacts, months=3, seed=args.seed))
    parse_seconds = time.perf_counter() - began
    start = DEFAULT_START
    end = start + timedelta(days=args.days)
    print(
        f"clm simulate benchmark: {args.contacts:,} contacts, {args.days} days, step {args.step}, "
        f"rulesets {EXAMPLES.name}/ ({', '.join(CORE_EXAMPLES)})"
    )
    print(
        f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs; "
        f"history: {len(history.events):,} events generated and parsed in {parse_seconds:.1f} s"
    )

    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler()
        profiler.start()
    result = simulate(RULESETS, history, start=start, end=end, step=step)
    if profiler is not None:
        profiler.stop()

    events = result.events
    ran = sum(v for k, v in result.actions.items() if k != "pending")
    print(
        f"events: {events['replayed']:,} replayed ({events['contacts']:,} contacts), "
        f"{result.skipped_events:,} outside the window, {events['duplicates']:,} duplicates"
    )
    print(
        f"fires: {result.fired:,}; actions: {ran:,} run "
        f"({', '.join(f'{v:,} {k}' for k, v in result.actions.items())})"
    )
    print(f"scheduler: {result.scheduler}, {result.ticks:,} ticks, {result.scheduler_counts}")
    per_tick = 1000 * result.duration_seconds / max(1, result.ticks)
    verdict = "meets" if result.duration_seconds < TARGET_SECONDS else "MISSES"
    print(
        f"wall time: {result.duration_seconds:.1f} s for {result.days:.0f} simulated days = "
        f"{result.days_per_second:.2f} simulated days/s ({per_tick:.1f} ms per step); "
        f"{verdict} the {TARGET_SECONDS:.0f} s target"
    )
    for note in result.notes:
        print(f"note: {note}")
    if profiler is not None:
        print(profiler.output_text(unicode=True, color=False, show_all=False))
    return 0 if result.duration_seconds < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
