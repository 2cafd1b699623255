"""Python source for prepared conditions: one function that evaluates many rules at once.

Why generate code: a tree of closures pays a Python call per node and reads the same fact once
per leaf; one generated function reads each fact once into a local and evaluates every rule as
an inline ``and``/``or``/``not`` expression, which is what makes the fast path several times
faster than closures (see ``benchmarks/evaluate.py``).

Security: nothing from a ruleset ever becomes source text. Every value, key, fact loader and
operator reaches the code as an argument of a factory function and is referred to by an
identifier generated here (``_v12``); the only text in the source comes from this module. The
code is compiled and run with no builtins at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..scores import current_score, current_scores
from ..types import MISSING, FactContext
from . import ops
from .facts import CONTACT_VALUES, FactPlan, load_computed
from .prepare import Node, PConst, PGroup, PLeaf, PNot, PSegment
from .values import NUMBER_TYPES, ContextValue

_UNSET = object()
_TEXT_OR_LIST = frozenset({str, list, tuple})

# Source fragments for plain fields, keyed by the (validated) field name. The text comes from
# these tables, never from the ruleset that named the field. A mapping field is read once into
# its own local (``_cm = _c.metrics``) and each key from there.
_CONTACT_VALUE_CODE = {name: f"_c.{name}" for name in CONTACT_VALUES}
_CONTACT_MAPPING_BASES = {
    "attributes": ("_ca", "_ca = _c.attributes"),
    "metrics": ("_cm", "_cm = _c.metrics"),
    "scores": ("_cs", "_cs = _c.scores"),
    "consent": ("_cc", "_cc = _c.consent"),
}
_EVENT_FIELD_CODE = {
    name: f"(_M if _e is None else _e.{name})"
    for name in ("id", "type", "contact_id", "occurred_at", "properties")
}
_BASE_ORDER = (
    "_tr = ctx.transition",
    "_e = ctx.event",
    *(line for _, line in _CONTACT_MAPPING_BASES.values()),
)

_SHADOW_CODE = {
    "n": "{name} = {f} if _type({f}) in _NUM else _NAN",
    "s": "{name} = {f} if _type({f}) is _str else None",
    "l": "{name} = {f} if _type({f}) in _LS else None",
}

_COMPARISONS = {
    ops.test_lt: "<",
    ops.test_lte: "<=",
    ops.test_gt: ">",
    ops.test_gte: ">=",
}


def leaf_with_ref(op: Any, ctx: FactContext, fact: Any, other: Any) -> bool:
    """A leaf whose value is another fact: prepared now, since it was unknown at load."""
    if other is MISSING or (fact is MISSING and not op.accepts_missing):
        return False
    if op.prepare is not None:
        try:
            other = op.prepare(other)
        except (ValueError, TypeError):
            return False
    if isinstance(other, ContextValue):
        other = other.resolve(ctx)
        if other is MISSING:
            return False
    return bool(op.test(fact, other))


def _ref_caller(op: Any) -> Callable[[FactContext, Any, Any], bool]:
    def call(ctx: FactContext, fact: Any, other: Any) -> bool:
        return leaf_with_ref(op, ctx, fact, other)

    return call


def _dynamic_caller(op: Any, value: ContextValue) -> Callable[[FactContext, Any], bool]:
    test, resolve, accepts_missing = op.test, value.resolve, op.accepts_missing

    def call(ctx: FactContext, fact: Any) -> bool:
        if fact is MISSING and not accepts_missing:
            return False
        other = resolve(ctx)
        return other is not MISSING and bool(test(fact, other))

    return call


def _computed_loader(plan: FactPlan) -> Callable[[FactContext], Any]:
    def load(ctx: FactContext) -> Any:
        return load_computed(plan, ctx)

    return load


class _Scope:
    """The facts one generated function reads: each loaded once, into a local."""

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.locals: dict[tuple[Any, ...], str] = {}
        self.lines: list[str] = []
        self.bases: set[str] = set()
        self.shadows: set[str] = set()
        self.loaders: dict[str, str] = {}

    def fact(self, plan: FactPlan) -> tuple[str, bool]:
        """(expression for the fact's value, whether it is a plain local read)."""
        name = self.locals.get(plan.identity)
        if name is None:
            name = self.locals[plan.identity] = f"f{len(self.locals)}"
            self._load(plan, name)
        if plan.kind == "computed":
            loader = self.loaders.get(name)
            if loader is None:
                loader = self.loaders[name] = self.gen.const(_computed_loader(plan), "_cf")
            return f"({name} if {name} is not _U else ({name} := {loader}(ctx)))", False
        return name, True

    def _load(self, plan: FactPlan, name: str) -> None:
        kind, lines = plan.kind, self.lines
        if kind == "computed":
            lines.append(f"{name} = _U")
            return
        if kind == "now":
            lines.append(f"{name} = ctx.now")
            return
        if kind == "score":  # decayed to now: a call, then a plain local like any other fact
            if plan.keys:
                key = self.gen.const(plan.keys[0], "_k")
                lines.append(f"{name} = {self.gen.const(current_score, '_sc')}(_c, {key}, ctx.now)")
            else:
                lines.append(f"{name} = {self.gen.const(current_scores, '_sc')}(_c, ctx.now)")
            return
        if kind == "transition":
            key = self.gen.const(plan.field, "_k")
            lines.append(f"{name} = _tr.get({key}, _M) if _type(_tr) is _dict else _M")
            self.bases.add("_tr = ctx.transition")
            return
        keys = [self.gen.const(key, "_k") for key in plan.keys]
        if kind == "contact" and plan.field in _CONTACT_MAPPING_BASES:
            base, line = _CONTACT_MAPPING_BASES[plan.field]
            self.bases.add(line)
            if not keys:
                lines.append(f"{name} = {base}")
                return
            lines.append(f"{name} = {base}.get({keys.pop(0)}, _M)")
        elif kind == "contact":
            lines.append(f"{name} = {_CONTACT_VALUE_CODE[plan.field]}")
        elif kind == "event":
            self.bases.add("_e = ctx.event")
            lines.append(f"{name} = {_EVENT_FIELD_CODE[plan.field]}")
        else:
            lines.append(f"{name} = _M")
            return
        for key in keys:
            lines.append(f"{name} = {name}.get({key}, _M) if _type({name}) is _dict else _M")

    def shadow(self, local: str, kind: str) -> str:
        """A local holding the fact if it has the type ``kind`` needs, computed once.

        ``n``: the number, or NaN (so any comparison is false, and ``true`` is not a number);
        ``s``: the text, or None; ``l``: the list, tuple or text, or None.
        """
        name = f"{kind}{local[1:]}"
        if name not in self.shadows:
            self.shadows.add(name)
            self.lines.append(_SHADOW_CODE[kind].format(name=name, f=local))
        return name

    def header(self) -> list[str]:
        # Bases first, in a fixed order, then the facts in the order they were first used.
        bases = [line for line in _BASE_ORDER if line in self.bases]
        return ["_c = ctx.contact", *bases, *self.lines]


class Generator:
    """Builds the source and the namespace of one compiled evaluator."""

    def __init__(self) -> None:
        self.names: dict[str, Any] = {
            "_M": MISSING,
            "_U": _UNSET,
            "_type": type,
            "_dict": dict,
            "_str": str,
            "_NUM": NUMBER_TYPES,
            "_LS": _TEXT_OR_LIST,
            "_NAN": math.nan,
        }
        self._ids: dict[int, str] = {}
        self.functions: list[str] = []
        self.segments: dict[int, str] = {}

    def const(self, value: Any, prefix: str = "_v") -> str:
        """An identifier bound to ``value`` in the generated code (shared for one object)."""
        name = self._ids.get(id(value))
        if name is not None and self.names[name] is value:
            return name
        name = f"{prefix}{len(self.names)}"
        self.names[name] = value
        self._ids[id(value)] = name
        return name

    # -- expressions -----------------------------------------------------------------------

    def expr(self, node: Node, scope: _Scope) -> str:
        if isinstance(node, PGroup):
            if not node.children:
                return "True" if node.kind == "all" else "False"
            joiner = " and " if node.kind == "all" else " or "
            return "(" + joiner.join(self.expr(child, scope) for child in node.children) + ")"
        if isinstance(node, PNot):
            return f"(not {self.expr(node.child, scope)})"
        if isinstance(node, PConst):
            return "True" if node.value else "False"
        if isinstance(node, PSegment):
            return f"{self.segment_function(node)}(ctx)"
        return self.leaf(node, scope)

    def leaf(self, node: PLeaf, scope: _Scope) -> str:
        op = node.op
        fact, plain = scope.fact(node.fact)
        if node.ref is not None:
            other, _ = scope.fact(node.ref)
            return f"{self.const(_ref_caller(op), '_r')}(ctx, {fact}, {other})"
        if node.dynamic:
            caller = self.const(_dynamic_caller(op, node.prepared), "_d")
            return f"{caller}(ctx, {fact})"
        if plain:
            inline = self.inline(op.test, fact, node.prepared, scope)
            if inline is not None:
                return inline
        test, value = self.const(op.test, "_t"), self.const(node.prepared)
        if op.accepts_missing:
            return f"{test}({fact}, {value})"
        if plain:
            return f"({fact} is not _M and {test}({fact}, {value}))"
        return f"_leaf({test}, {fact}, {value})"

    def inline(self, test: Any, f: str, value: Any, scope: _Scope) -> str | None:
        """The built-in operators as inline Python, with the same strict semantics.

        Type guards are read from shadows computed once per fact (see ``_Scope.shadow``):
        ``n3`` is ``f3`` if it is a number else NaN (every comparison with NaN is false),
        ``s3`` is ``f3`` if it is text else None, ``l3`` is ``f3`` if it is a list or text.
        """
        kind = type(value)
        if test is ops.test_eq or test is ops.test_ne:
            v = self.const(value) if value is None or kind in (bool, str) else None
            if value is None or kind is bool:
                same, differs = f"{f} is {v}", f"{f} is not {v}"
            elif kind is str:
                same, differs = f"{f} == {v}", f"{f} != {v}"
            elif kind in NUMBER_TYPES:
                n, v = scope.shadow(f, "n"), self.const(value)
                same, differs = f"{n} == {v}", f"{n} != {v}"
            else:
                return None
            return f"({same})" if test is ops.test_eq else f"({f} is not _M and {differs})"
        symbol = _COMPARISONS.get(test)
        if symbol is not None:
            guarded = self._guarded(f, kind, scope)
            if guarded is None:
                return None
            shadow, guard = guarded
            return f"({guard}{shadow} {symbol} {self.const(value)})"
        if test is ops.test_between:
            low, high = value
            guarded = self._guarded(f, type(low), scope)
            if guarded is None:
                return None
            shadow, guard = guarded
            return f"({guard}{self.const(low)} <= {shadow} <= {self.const(high)})"
        if test is ops.test_in or test is ops.test_not_in:
            members: ops.Members = value
            if members.singletons or (members.strings and members.numbers):
                return None
            if members.numbers:
                shadow, items = scope.shadow(f, "n"), self.const(members.numbers)
            else:
                shadow, items = scope.shadow(f, "s"), self.const(members.strings)
            if test is ops.test_in:
                return f"({shadow} in {items})"
            return f"({f} is not _M and {shadow} not in {items})"
        if (test is ops.test_contains or test is ops.test_not_contains) and kind is str:
            holds = "in" if test is ops.test_contains else "not in"
            seq = scope.shadow(f, "l")
            return f"({seq} is not None and {self.const(value)} {holds} {seq})"
        if test is ops.test_starts_with or test is ops.test_ends_with:
            method = "startswith" if test is ops.test_starts_with else "endswith"
            text = scope.shadow(f, "s")
            return f"({text} is not None and {text}.{method}({self.const(value)}))"
        if test is ops.test_exists:
            return f"({f} is not _M)" if value else f"({f} is _M)"
        if test is ops.test_is_null:
            if value:
                return f"({f} is None or {f} is _M)"
            return f"({f} is not None and {f} is not _M)"
        return None

    @staticmethod
    def _guarded(f: str, kind: type, scope: _Scope) -> tuple[str, str] | None:
        """(shadow, guard prefix) for an ordering of the fact against a ``kind`` value."""
        if kind in NUMBER_TYPES:
            return scope.shadow(f, "n"), ""
        if kind is str:
            text = scope.shadow(f, "s")
            return text, f"{text} is not None and "
        return None  # dates: the operator's own function parses the fact

    # -- functions -------------------------------------------------------------------------

    def segment_function(self, node: PSegment) -> str:
        """A function per segment, its result kept in ``ctx.cache`` for the context."""
        body = node.body
        name = self.segments.get(id(body))
        if name is not None:
            return name
        name = self.segments[id(body)] = f"_s{len(self.segments)}"
        key = self.const(("segment", node.name, object()), "_sk")
        scope = _Scope(self)
        expression = self.expr(body, scope) if body is not None else "False"
        self.functions.append(
            "\n".join(
                [
                    f"    def {name}(ctx):",
                    "        _cache = ctx.cache",
                    f"        _r = _cache.get({key}, _U)",
                    "        if _r is not _U:",
                    "            return _r",
                    *(f"        {line}" for line in scope.header()),
                    f"        _r = _cache[{key}] = True if {expression} else False",
                    "        return _r",
                ]
            )
        )
        return name

    def values(self, plans: list[FactPlan]) -> None:
        """``_values(ctx)``: the value of each of ``plans``, in order (computed facts loaded
        through ``ctx.cache``, so one the match loaded is not loaded again). What a decision
        saw is read from it once per context, only when a decision is traced."""
        scope = _Scope(self)
        items = [scope.fact(plan)[0] for plan in plans]
        self.functions.append(
            "\n".join(
                [
                    "    def _values(ctx):",
                    *(f"        {line}" for line in scope.header()),
                    f"        return ({''.join(item + ', ' for item in items)})",
                ]
            )
        )

    def matcher(self, roots: list[Node]) -> str:
        """The source of the factory that returns ``_match(ctx) -> list[int]`` and
        ``_values`` (see :meth:`values`)."""
        scope = _Scope(self)
        tests = []
        for index, root in enumerate(roots):
            if isinstance(root, PConst) and root.value:
                tests.append(f"        _ap({index})")
            elif not isinstance(root, PConst):
                tests.append(f"        if {self.expr(root, scope)}:\n            _ap({index})")
        self.names["_leaf"] = _leaf
        params = ", ".join(self.names)
        body = [
            "    def _match(ctx):",
            *(f"        {line}" for line in scope.header()),
            "        _out = []",
            "        _ap = _out.append",
            *tests,
            "        return _out",
        ]
        if not any(f.startswith("    def _values(") for f in self.functions):
            self.functions.append("    def _values(ctx):\n        return ()")
        return "\n".join(
            [f"def _factory({params}):", *self.functions, *body, "    return _match, _values", ""]
        )


def _leaf(test: Callable[[Any, Any], bool], fact: Any, value: Any) -> bool:
    """A leaf over a computed fact (read lazily, so passed in as an argument)."""
    return fact is not MISSING and bool(test(fact, value))


def build(
    roots: list[Node], plans: list[FactPlan] | None = None
) -> tuple[Callable[[FactContext], list[int]], Callable[[FactContext], tuple[Any, ...]], str]:
    """The compiled evaluator of ``roots``, the reader of ``plans`` (``Generator.values``)
    and their source (kept for debugging)."""
    gen = Generator()
    if plans:
        gen.values(plans)
    source = gen.matcher(roots)
    code = compile(source, "<clm-conditions>", "exec")
    namespace: dict[str, Any] = {"__builtins__": {}}
    exec(code, namespace)
    match, values = namespace["_factory"](**gen.names)
    return match, values, source
