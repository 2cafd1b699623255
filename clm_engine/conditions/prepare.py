"""Preparing conditions: every leaf's operator found, its value prepared, its fact planned.

Both evaluators (the generated code and the explain interpreter) work from this prepared
tree, so a ruleset value is validated and normalised once, in one place. Problems are
collected with a JSON pointer relative to the condition (``/all/1/value``), not raised one
at a time, so an ops person sees every mistake at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..models import All, AnyOf, Condition, FactRef, Leaf, Not
from ..plugins import FACT_TYPES, FactSpec, OperatorSpec
from ..rulesets.problems import did_you_mean, did_you_mean_operator
from .facts import FactPlan, check_args, fact_type, plan_fact
from .ops import SAME_TYPE_OPERATORS, STAGE_OPERATORS, type_words
from .values import ContextValue, describe

#: How deep all/any/not may nest. Deeper trees are refused: they are unreadable for people,
#: and the generated Python would hit the parser's nesting limit.
MAX_DEPTH = 32

SEGMENT_OP = "in_segment"


@dataclass
class PLeaf:
    pointer: str
    leaf: Leaf
    op: OperatorSpec
    fact: FactPlan
    prepared: Any = None
    ref: FactPlan | None = None  # the value is another fact's value

    @property
    def dynamic(self) -> bool:
        return isinstance(self.prepared, ContextValue)


@dataclass
class PSegment:
    pointer: str
    name: str
    body: Node | None = None  # set once the segment is prepared (shared by every reference)


@dataclass
class PGroup:
    kind: str  # "all" or "any"
    children: list[Node]


@dataclass
class PNot:
    child: Node


@dataclass
class PConst:
    """A condition whose value is known: nothing to evaluate (an unusable leaf is false)."""

    value: bool


Node = PLeaf | PSegment | PGroup | PNot | PConst


@dataclass
class Problems:
    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, pointer: str, message: str) -> None:
        self.items.append((pointer, message))


def segment_references(condition: Condition | None) -> list[tuple[str, str]]:
    """(pointer, segment name) of each in_segment leaf in a condition."""
    found: list[tuple[str, str]] = []

    def walk(node: Any, pointer: str) -> None:
        if isinstance(node, All | AnyOf):
            key = "all" if isinstance(node, All) else "any"
            for index, child in enumerate(getattr(node, key)):
                walk(child, f"{pointer}/{key}/{index}")
        elif isinstance(node, Not):
            walk(node.not_, f"{pointer}/not")
        elif isinstance(node, Leaf) and node.op == SEGMENT_OP and isinstance(node.value, str):
            found.append((f"{pointer}/value", node.value))

    walk(condition, "")
    return found


class Preparer:
    """Prepares conditions against one set of operators, facts, segments and stages."""

    def __init__(
        self,
        operators: dict[str, OperatorSpec],
        facts: dict[str, FactSpec],
        segments: dict[str, Condition],
        stages: tuple[str, ...],
        *,
        check_types: bool = False,
    ) -> None:
        #: Check leaves against their facts' declared types (validation only: evaluation
        #: never fails on types, a leaf that cannot match is just false).
        self.check_types = check_types
        self.operators = operators
        self.facts = facts
        self.segments = segments
        self.stages = stages
        self.prepared_segments: dict[str, PSegment] = {}
        self._cycles: dict[str, list[str] | None] = {}

    # -- segments ------------------------------------------------------------------------------

    def cycle_from(self, name: str) -> list[str] | None:
        """The names on a cycle reachable from segment ``name`` (first repeated at the end)."""
        if name in self._cycles:
            return self._cycles[name]
        path: list[str] = []
        found: list[str] | None = None

        def visit(current: str) -> bool:
            nonlocal found
            if current in path:
                found = [*path[path.index(current) :], current]
                return True
            if current not in self.segments:
                return False
            path.append(current)
            for _, child in segment_references(self.segments[current]):
                if visit(child):
                    return True
            path.pop()
            return False

        visit(name)
        self._cycles[name] = found
        return found

    def segment(self, name: str, problems: Problems) -> PSegment:
        """The prepared segment, shared by every leaf that names it."""
        prepared = self.prepared_segments.get(name)
        if prepared is None:
            prepared = self.prepared_segments[name] = PSegment(f"segment {name!r}: ", name)
            prepared.body = self.prepare(self.segments[name], problems, prefix=prepared.pointer)
        return prepared

    # -- conditions ----------------------------------------------------------------------------

    def prepare(
        self,
        condition: Condition | None,
        problems: Problems,
        *,
        prefix: str = "",
        follow_segments: bool = True,
    ) -> Node:
        """The prepared tree of ``condition``; problems are added, never raised."""
        if condition is None:
            return PConst(True)
        return self._node(condition, "", 1, problems, prefix, follow_segments)

    def _node(
        self,
        node: Any,
        pointer: str,
        depth: int,
        problems: Problems,
        prefix: str,
        follow: bool,
    ) -> Node:
        if depth > MAX_DEPTH:
            problems.add(
                prefix + pointer,
                f"conditions nest deeper than {MAX_DEPTH} levels; move part of them into a segment",
            )
            return PConst(False)
        if isinstance(node, All | AnyOf):
            key = "all" if isinstance(node, All) else "any"
            children = [
                self._node(child, f"{pointer}/{key}/{i}", depth + 1, problems, prefix, follow)
                for i, child in enumerate(getattr(node, key))
            ]
            return PGroup(key, children)
        if isinstance(node, Not):
            return PNot(
                self._node(node.not_, f"{pointer}/not", depth + 1, problems, prefix, follow)
            )
        if isinstance(node, Leaf):
            return self._leaf(node, pointer, problems, prefix, follow)
        problems.add(prefix + pointer, f"not a condition: {describe(node)}")
        return PConst(False)

    def _leaf(
        self, leaf: Leaf, pointer: str, problems: Problems, prefix: str, follow: bool
    ) -> Node:
        at = prefix + pointer
        count = len(problems.items)
        if leaf.op == SEGMENT_OP:
            return self._segment_leaf(leaf, at, problems, follow)
        op = self.operators.get(leaf.op)
        if op is None:
            problems.add(
                f"{at}/op",
                f"unknown operator {leaf.op!r}{did_you_mean_operator(leaf.op, self.operators)}",
            )
        if leaf.fact is None:
            problems.add(f"{at}/fact", f"operator {leaf.op!r} needs a fact to test")
            return PConst(False)
        plan = plan_fact(leaf.fact, leaf.args, self.facts)
        if plan.problem:
            problems.add(f"{at}/args" if plan.kind != "unknown" else f"{at}/fact", plan.problem)
        args_problem = check_args(plan)
        if args_problem:
            problems.add(f"{at}/args", args_problem)
        ref = None
        prepared: Any = leaf.value
        if isinstance(leaf.value, FactRef):
            ref = plan_fact(leaf.value.fact, None, self.facts)
            ref_problem = ref.problem or check_args(ref)
            if ref_problem:
                problems.add(f"{at}/value/fact", ref_problem)
        elif op is not None and op.prepare is not None:
            try:
                prepared = op.prepare(leaf.value)
            except (ValueError, TypeError) as error:
                problems.add(f"{at}/value", str(error))
        if self.check_types and op is not None and len(problems.items) == count:
            _check_types(leaf, op, plan, ref, at, problems)
        if (
            leaf.op in STAGE_OPERATORS
            and self.stages
            and isinstance(leaf.value, str)
            and leaf.value not in self.stages
        ):
            problems.add(
                f"{at}/value",
                f"unknown stage {leaf.value!r}{did_you_mean(leaf.value, list(self.stages))} "
                f"(the stages are: {', '.join(self.stages)})",
            )
        if op is None or len(problems.items) > count:
            return PConst(False)
        return PLeaf(at, leaf, op, plan, prepared, ref)

    def _segment_leaf(self, leaf: Leaf, at: str, problems: Problems, follow: bool) -> Node:
        name = leaf.value
        if not isinstance(name, str) or not name:
            problems.add(
                f"{at}/value", f"in_segment needs the name of a segment (got {describe(name)})"
            )
            return PConst(False)
        if name not in self.segments:
            known = sorted(self.segments)
            problems.add(
                f"{at}/value",
                f"unknown segment {name!r}{did_you_mean(name, known)}"
                + (f" (the segments are: {', '.join(known)})" if known else " (none is defined)"),
            )
            return PConst(False)
        cycle = self.cycle_from(name)
        if cycle:
            problems.add(f"{at}/value", f"segments form a cycle: {' -> '.join(cycle)}")
            return PConst(False)
        if not follow:
            return PSegment(at, name)
        return self.segment(name, problems)


def _check_types(
    leaf: Leaf,
    op: OperatorSpec,
    plan: FactPlan,
    ref: FactPlan | None,
    at: str,
    problems: Problems,
) -> None:
    """The leaf against its fact's declared type: an operator that cannot test that type is a
    problem at ``/op``, a value that can never match one at ``/value`` (``docs/rulesets.md``,
    "Types"). Facts of type ``any`` are not checked."""
    declared = fact_type(plan)
    if declared == "any":
        return
    if op.fact_types is not None and declared not in op.fact_types:
        problems.add(
            f"{at}/op",
            f"{leaf.op} tests {_listed(op.fact_types)}, and {plan.path} is {type_words(declared)}"
            + _instead(leaf.op, declared),
        )
        return
    if ref is not None:
        other = fact_type(ref)
        if other == "any":
            return
        if op.fact_types is not None and other not in op.fact_types:
            problems.add(
                f"{at}/value/fact",
                f"{leaf.op} tests {_listed(op.fact_types)}, and {ref.path} is {type_words(other)}",
            )
        elif leaf.op in SAME_TYPE_OPERATORS and other != declared:
            problems.add(
                f"{at}/value/fact",
                f"{plan.path} is {type_words(declared)} and {ref.path} is "
                f"{type_words(other)}: {leaf.op} never matches them",
            )
        return
    if op.check is not None:
        try:
            problem = op.check(declared, leaf.value)
        except Exception as error:  # a plugin's check may raise anything
            problem = f"operator {leaf.op!r} could not check its value: {error!r}"
        if problem:
            problems.add(f"{at}/value", f"{plan.path} is {type_words(declared)}: {problem}")


def _listed(fact_types: frozenset[str]) -> str:
    """``a number, text or a time``: fact types in the order of ``FACT_TYPES``."""
    words = [type_words(t) for t in FACT_TYPES if t in fact_types]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _instead(op: str, declared: str) -> str:
    """What to write instead, for the common mistakes."""
    if declared == "list" and op in ("eq", "ne", "in", "not_in"):
        return "; use contains or not_contains"
    if declared == "time" and op in ("in", "not_in"):
        return "; use between, before or after"
    if declared == "dates":
        return (
            "; a fact of dates by entity is for relative-time triggers "
            '({"before": ..., "days": 30}), or exists'
        )
    if declared == "mapping":
        return "; read one of its keys (a dotted path), or use exists"
    return ""
