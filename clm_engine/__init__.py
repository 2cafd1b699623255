"""clm-engine: customer lifecycle automation.

The public API is what this module exports; everything else may change.
"""

from .clock import Clock, SystemClock, VirtualClock
from .engine import Engine, IngestResult, Rejection
from .errors import (
    ActionError,
    ClmError,
    EventError,
    PluginError,
    ReducerError,
    RulesetError,
    StoreError,
)
from .hooks import hookimpl
from .models import DEFAULT_STAGES, Contact, Event

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_STAGES",
    "ActionError",
    "ClmError",
    "Clock",
    "Contact",
    "Engine",
    "Event",
    "EventError",
    "IngestResult",
    "PluginError",
    "ReducerError",
    "Rejection",
    "RulesetError",
    "StoreError",
    "SystemClock",
    "VirtualClock",
    "__version__",
    "hookimpl",
]
