"""ConditionCompiler: the one entry point the engine and the ruleset validator use."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..models import Condition
from ..plugins import FactSpec, OperatorSpec
from ..types import FactContext
from . import codegen, record
from .explain import explain_node
from .prepare import Node, Preparer, Problems


class CompiledConditions:
    """Several rules' conditions, compiled into one function over a context."""

    def __init__(
        self,
        function: Callable[[FactContext], list[int]],
        source: str,
        count: int,
        values: Callable[[FactContext], tuple[Any, ...]] | None = None,
        reads: Sequence[tuple[tuple[str, int], ...] | None] = (),
    ):
        self._function = function
        #: The generated Python, for debugging (``print(compiled.source)``).
        self.source = source
        self.count = count
        self._values = values
        self._reads = reads  # per condition: (fact key, index into what _values returns)
        self._cache_key = ("values", object())

    def matching(self, ctx: FactContext) -> list[int]:
        """Indices (into the list given to ``compile``) of the conditions that hold in ``ctx``."""
        return self._function(ctx)

    def record(self, index: int, ctx: FactContext) -> dict[str, Any] | None:
        """What a decision on condition ``index`` saw in ``ctx``: the same record as
        ``ConditionCompiler.record``, read from one generated function that loads every fact
        of these conditions once per context (kept in ``ctx.cache``), not node by node. None
        when the condition is None."""
        reads = self._reads[index] if index < len(self._reads) else None
        if reads is None or self._values is None:
            return None
        cache = ctx.cache
        values = cache.get(self._cache_key)
        if values is None:
            values = cache[self._cache_key] = self._values(ctx)
        return record.pick(reads, values)

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
        #: With the facts each reads (``record.readers``).
        self._explained: dict[int, tuple[Condition, Node, tuple[tuple[str, Any], ...]]] = {}

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
        plans: dict[str, tuple[int, Any]] = {}  # fact key -> (index in _values, plan)
        reads: list[tuple[tuple[str, int], ...] | None] = []
        for condition, root in zip(conditions, roots, strict=True):
            pairs = []
            for key, plan in record.readers(root) if condition is not None else ():
                index = plans.setdefault(key, (len(plans), plan))[0]
                pairs.append((key, index))
            reads.append(tuple(pairs) if condition is not None else None)
        ordered = [plan for _, plan in plans.values()]
        function, values, source = codegen.build(roots, ordered)
        return CompiledConditions(function, source, len(roots), values, reads)

    def _prepared(self, condition: Condition) -> tuple[Node, tuple[tuple[str, Any], ...]]:
        # Prepared once per condition: the engine records every match it traces, and
        # preparing (operators' prepare(), fact plans) costs more than evaluating.
        prepared = self._explained.get(id(condition))
        if prepared is None or prepared[0] is not condition:
            root = self._prepare_all([condition])[0]
            prepared = self._explained[id(condition)] = (condition, root, record.readers(root))
        return prepared[1], prepared[2]

    def explain(self, condition: Condition | None, ctx: FactContext) -> dict[str, Any]:
        """Evaluate one condition without short-circuit and return the trace tree (JSON-able).

        Same result as :meth:`compile`'s evaluator; computed facts share ``ctx.cache`` with it.
        """
        if condition is None:
            return {"result": True, "note": "no condition: always true"}
        return explain_node(self._prepared(condition)[0], ctx)

    def record(self, condition: Condition | None, ctx: FactContext) -> dict[str, Any] | None:
        """What a decision on ``condition`` saw: the value of each fact it reads (JSON-able,
        see :mod:`clm_engine.conditions.record`), for :meth:`rebuild` to explain later.

        Computed facts share ``ctx.cache`` with the compiled evaluator, so a fact the match
        already loaded is not loaded again. None when there is no condition.
        """
        if condition is None:
            return None
        return record.record(self._prepared(condition)[1], ctx)

    def rebuild(
        self, condition: Condition | None, seen: dict[str, Any], ctx: FactContext
    ) -> dict[str, Any] | None:
        """The trace tree :meth:`explain` gave when the decision ``seen`` was recorded, from
        those values: ``ctx`` gives the rest (``now``, the stages) to values that depend on it.
        """
        if condition is None:
            return None
        return explain_node(self._prepared(condition)[0], ctx, record.reader(seen))
