"""Simulation and backtests: replay an event history against rulesets, on a virtual clock.

Why it exists: before an ops team ships a ruleset change it wants to know what the change
*does*: how often each rule would fire, for whom, week by week, and which contacts would be
treated differently from today. The only honest way to know is to run the real engine (the
same reducers, conditions, limits, outbox, delays, schedules and dispatch) over a real
history, in a scratch store, on a ``VirtualClock``; ``docs/simulation.md`` says how.

One module per job:

* ``window``: the window and the step, as asked for and checked; ``SimulationError``;
* ``history``: reading a history once into time order, sorted on disk (bounded memory);
* ``replay``: the clock loop over one scratch store, and ``simulate()``;
* ``stops``: what each stop of the clock must run (a full tick, or only the dispatch);
* ``scratch``: where the scratch store lives, and copying a real store there read-only;
* ``report``: the result, counted from the scratch store's traces and outbox;
* ``comparison``: two versions over the same history, rule by rule, and ``compare()``;
"""

from __future__ import annotations

from .comparison import Comparison, compare
from .history import EventHistory, read_events
from .replay import simulate
from .report import SimulationResult
from .window import SimulationError, parse_step, parse_when

__all__ = [
    "Comparison",
    "EventHistory",
    "SimulationError",
    "SimulationResult",
    "compare",
    "parse_step",
    "parse_when",
    "read_events",
    "simulate",
]
