"""The explain interpreter: evaluates every node (no short-circuit) and returns the trace.

It is the reference meaning of a condition, written plainly: the generated code must give the
same result on every input (a property test checks it). Traces are JSON-able: dates become ISO
text, a missing fact becomes ``"actual": null, "missing": true``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..models import Duration, FactRef
from ..types import MISSING, FactContext
from .facts import FactPlan, resolve
from .prepare import Node, PConst, PGroup, PLeaf, PNot, PSegment
from .values import ContextValue, to_json

#: How the interpreter reads a fact: ``resolve`` reads the context; a reader over the values a
#: decision recorded (``record.reader``) rebuilds the trace of a past decision.
Reader = Callable[[FactPlan, FactContext], Any]


def explain_node(node: Node, ctx: FactContext, read: Reader = resolve) -> dict[str, Any]:
    """The trace of ``node`` in ``ctx``: each node with its ``result``; facts read by ``read``."""
    if isinstance(node, PGroup):
        children = [explain_node(child, ctx, read) for child in node.children]
        results = [child["result"] for child in children]
        result = all(results) if node.kind == "all" else any(results)
        return {node.kind: children, "result": result}
    if isinstance(node, PNot):
        child = explain_node(node.child, ctx, read)
        return {"not": child, "result": not child["result"]}
    if isinstance(node, PSegment):
        trace = explain_node(node.body, ctx, read) if node.body is not None else {"result": False}
        return {
            "op": "in_segment",
            "value": node.name,
            "result": trace["result"],
            "segment": {"name": node.name, "trace": trace},
        }
    if isinstance(node, PConst):
        return {"result": node.value}
    return _leaf(node, ctx, read)


def _ruleset_value(value: Any) -> Any:
    if isinstance(value, Duration):
        return value.model_dump(exclude_defaults=True)
    if isinstance(value, FactRef):
        return {"fact": value.fact}
    return to_json(value)


def _leaf(node: PLeaf, ctx: FactContext, read: Reader) -> dict[str, Any]:
    leaf, op = node.leaf, node.op
    actual = read(node.fact, ctx)
    trace: dict[str, Any] = {"fact": leaf.fact, "op": leaf.op}
    if leaf.args:
        trace["args"] = to_json(leaf.args)
    trace["value"] = _ruleset_value(leaf.value)
    trace["actual"] = to_json(actual)
    if actual is MISSING:
        trace["missing"] = True
    value = node.prepared
    usable = True
    if node.ref is not None:
        other = read(node.ref, ctx)
        trace["value_fact"] = node.ref.path
        trace["value"] = to_json(other)
        if other is MISSING:
            trace["value_missing"] = True
            usable = False
        elif op.prepare is not None:
            try:
                value = op.prepare(other)
            except (ValueError, TypeError) as error:
                trace["note"] = f"the value of {node.ref.path} is unusable here: {error}"
                usable = False
        else:
            value = other
    if usable and isinstance(value, ContextValue):
        value = value.resolve(ctx)
        trace["compared_to"] = to_json(value)
        usable = value is not MISSING
    if not usable or (actual is MISSING and not op.accepts_missing):
        result = False
    else:
        result = bool(op.test(actual, value))
        if not result and "note" not in trace:
            note_for = getattr(op.test, "explain_note", None)
            note = note_for(actual, value) if callable(note_for) else None
            if note:
                trace["note"] = note
    trace["result"] = result
    return trace
