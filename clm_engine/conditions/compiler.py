"""ConditionCompiler: the one entry point the engine and the ruleset validator use."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..models import Condition
from ..plugins import FactSpec, OperatorSpec
from ..types import FactContext
from . import codegen
from .explain import explain_node
from .prepare import Node, Preparer, Problems


class CompiledConditions:
    """Several rules' conditions, compiled into one function over a context."""

    def __init__(self, function: Callable[[FactContext], list[int]], source: str, count: int):
        self._function = function
        #: The generated Python, for debugging (``print(compiled.source)``).
        self.source = source
        self.count = count

    def matching(self, ctx: FactContext) -> list[int]:
        """Indices (into the list given to ``compile``) of the conditions that hold in ``ctx``."""
        return self._function(ctx)

    def __len__(self) -> int:
        return self.count


class ConditionCompiler:
    """Prepares conditions against the registered operators and facts, and compiles them.

    ``segments`` are the ruleset's named conditions (for ``in_segment``); ``stages`` its stage
    order, used to check the names given to ``stage_at_least`` / ``stage_at_most`` (at
    evaluation those operators read ``ctx.stages``, or the default stages when it is empty).
    """

    def __init__(
        self,
        *,
        operators: dict[str, OperatorSpec],
        facts: dict[str, FactSpec],
        segments: dict[str, Condition] | None = None,
        stages: tuple[str, ...] = (),
    ) -> None:
        self.operators = operators
        self.facts = facts
        self.segments = dict(segments or {})
        self.stages = tuple(stages)
        #: Prepared trees of the conditions explained so far, by identity (the tuple keeps the
        #: condition alive, so its id cannot be reused by another object).
        self._explained: dict[int, tuple[Condition, Node]] = {}

    def _preparer(self, *, check_types: bool = False) -> Preparer:
        return Preparer(
            self.operators, self.facts, self.segments, self.stages, check_types=check_types
        )

    def check(self, condition: Condition) -> list[tuple[str, str]]:
        """Problems found while preparing ``condition``: (relative JSON pointer, message).

        Reports unknown operators, unusable values (each operator's ``prepare()``), unknown
        facts and bad ``args``, unknown segments and segment cycles, and leaves that cannot
        match their fact's declared type (an operator that cannot test it, a value of another
        kind). A segment's own body is not checked here: check each segment's condition on its
        own. :meth:`compile` does not check types: a leaf that cannot match is false.
        """
        problems = Problems()
        self._preparer(check_types=True).prepare(condition, problems, follow_segments=False)
        return problems.items

    def _prepare_all(self, conditions: Sequence[Condition | None]) -> list[Node]:
        preparer, problems = self._preparer(), Problems()
        roots = []
        for index, condition in enumerate(conditions):
            start = len(problems.items)
            roots.append(preparer.prepare(condition, problems))
            problems.items[start:] = [
                (f"condition {index}: {pointer or '/'}", message)
                for pointer, message in problems.items[start:]
            ]
        if problems.items:
            raise ValueError(
                "conditions cannot be compiled: "
                + "; ".join(f"{where}: {message}" for where, message in problems.items)
            )
        return roots

    def compile(self, conditions: Sequence[Condition | None]) -> CompiledConditions:
        """One compiled evaluator for several rules' conditions (None = always true).

        Raises ``ValueError`` listing every problem (see :meth:`check`) when a condition, or a
        segment it uses, is unusable.
        """
        roots = self._prepare_all(conditions)
        function, source = codegen.build(roots)
        return CompiledConditions(function, source, len(roots))

    def explain(self, condition: Condition | None, ctx: FactContext) -> dict[str, Any]:
        """Evaluate one condition without short-circuit and return the trace tree (JSON-able).

        Same result as :meth:`compile`'s evaluator; computed facts share ``ctx.cache`` with it.
        """
        if condition is None:
            return {"result": True, "note": "no condition: always true"}
        # Prepared once per condition: the engine explains every match it records, and
        # preparing (operators' prepare(), fact plans) costs more than evaluating.
        prepared = self._explained.get(id(condition))
        if prepared is None or prepared[0] is not condition:
            prepared = self._explained[id(condition)] = (
                condition,
                self._prepare_all([condition])[0],
            )
        return explain_node(prepared[1], ctx)
