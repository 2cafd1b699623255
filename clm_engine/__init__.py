"""clm-engine: customer lifecycle automation.

The public API is what this module exports, plus the documented modules ``clm_engine.cli``
(helpers for plugins' commands), ``clm_engine.testing`` (helpers for plugins' tests),
``clm_engine.money``, ``clm_engine.consent`` and ``clm_engine.channels``; everything else
may change. Plugins use nothing else (``tests/test_public_api.py`` checks the plugins under
``plugins/``), and ``docs/plugin-hooks.md`` documents all of it.
"""

from . import channels, consent, money
from .clock import Clock, SystemClock, VirtualClock
from .dispatch import DispatchReport
from .engine import Engine, IngestResult, Rejection
from .erasure import Erasure, ErasureReport
from .errors import (
    ActionError,
    ClmError,
    EventError,
    PluginError,
    ReducerError,
    RetryLater,
    RulesetError,
    StoreError,
)
from .experiments.checks import check_experiment_arms
from .hooks import hookimpl, hookspec
from .models import (
    DEFAULT_STAGES,
    Condition,
    Contact,
    DurationSpec,
    Event,
    EventType,
    Experiment,
    Name,
    describe_validation_error,
    duration_to_timedelta,
    utc_text,
)
from .registry import Registry
from .rulesets.problems import closest, did_you_mean
from .settings_files import settings_from_file
from .store import Column, Index, OutboxRow, StageTransition, Table, TableAccess, Tables, Trace
from .timed import TimeReport
from .types import MISSING, ActionContext, Defer, FactContext, Veto

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_STAGES",
    "MISSING",
    "ActionContext",
    "ActionError",
    "ClmError",
    "Clock",
    "Column",
    "Condition",
    "Contact",
    "Defer",
    "DispatchReport",
    "DurationSpec",
    "Engine",
    "Erasure",
    "ErasureReport",
    "Event",
    "EventError",
    "EventType",
    "Experiment",
    "FactContext",
    "Index",
    "IngestResult",
    "Name",
    "OutboxRow",
    "PluginError",
    "ReducerError",
    "Registry",
    "Rejection",
    "RetryLater",
    "RulesetError",
    "StageTransition",
    "StoreError",
    "SystemClock",
    "Table",
    "TableAccess",
    "Tables",
    "TimeReport",
    "Trace",
    "Veto",
    "VirtualClock",
    "__version__",
    "channels",
    "check_experiment_arms",
    "closest",
    "consent",
    "describe_validation_error",
    "did_you_mean",
    "duration_to_timedelta",
    "hookimpl",
    "hookspec",
    "money",
    "settings_from_file",
    "utc_text",
]
