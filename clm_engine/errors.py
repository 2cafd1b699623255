"""Errors a user may see. Each carries a message fit to print as one line, without a traceback."""

from __future__ import annotations


class ClmError(Exception):
    """Base of every error clm-engine raises on purpose."""


class EventError(ClmError):
    """An event that does not have the fixed event shape (missing field, bad timestamp, ...)."""


class ReducerError(ClmError):
    """A reducer raised while applying an event; the event and its effects were not stored."""


class RulesetError(ClmError):
    """A ruleset that failed validation."""


class PluginError(ClmError):
    """A plugin could not be loaded, or two plugins claim the same name."""


class ActionError(ClmError):
    """An action failed or was called with bad parameters."""


class StoreError(ClmError):
    """The store cannot be opened or used (not a database, locked for too long, ...)."""
