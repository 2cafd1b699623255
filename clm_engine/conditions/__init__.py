"""Conditions: the ``if`` of a rule, prepared once and evaluated fast.

``ConditionCompiler`` is the whole public surface: the engine compiles a ruleset's conditions
into one evaluator (``compile(...).matching(ctx)``) and explains a single condition
(``explain``); the ruleset validator asks ``check`` for problems. ``docs/conditions.md`` is
the reference for the language itself.

Layout: ``values`` (dates, durations, equality), ``ops`` (built-in operators), ``facts``
(reading fact paths), ``prepare`` (validation into a prepared tree), ``codegen`` (the fast
path), ``explain`` (the reference interpreter), ``compiler`` (the entry point).
"""

from .compiler import CompiledConditions, ConditionCompiler
from .values import ContextValue

__all__ = ["CompiledConditions", "ConditionCompiler", "ContextValue"]
