"""Conditions that plugins keep in their own documents, judged with the engine's registries.

A sequence's exit condition, say: written in the rulesets' condition language, checked when
its document loads and evaluated when an action runs. Plugins reach this through
``DocumentContext.conditions`` (checks) and ``ActionContext.holds`` (evaluation), so they
never build a compiler against a registry of their own, and a compiled condition lives as
long as the engine's loaded rulesets (a reload builds a new ``Conditions``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..models import Condition
from ..types import FactContext
from .compiler import CompiledConditions, ConditionCompiler


class Conditions:
    """Checks and evaluates conditions with one engine's operators, facts and stages."""

    def __init__(
        self, operators: Mapping[str, Any], facts: Mapping[str, Any], stages: tuple[str, ...]
    ) -> None:
        self.stages = stages
        self._compiler = ConditionCompiler(
            operators=dict(operators), facts=dict(facts), stages=stages
        )
        self._compiled: dict[int, tuple[Condition, CompiledConditions]] = {}

    def problems(self, condition: Condition) -> list[tuple[str, str]]:
        """What is wrong with ``condition``: (JSON pointer relative to it, message) pairs."""
        return self._compiler.check(condition)

    def holds(self, condition: Condition, ctx: FactContext) -> bool:
        """Whether ``condition`` holds for ``ctx`` (compiled once per condition object)."""
        entry = self._compiled.get(id(condition))
        if entry is None or entry[0] is not condition:
            entry = self._compiled[id(condition)] = (
                condition,
                self._compiler.compile([condition]),
            )
        return bool(entry[1].matching(ctx))
