"""The built-in operators: what each ``op`` of a leaf means.

Each operator is a ``test(fact_value, prepared_value) -> bool`` and an optional
``prepare(value)`` that runs once when a ruleset loads, turns the ruleset's value into what
``test`` needs (a compiled pattern, a parsed date) and raises ``ValueError`` with a message for
an ops person when the value is unusable. ``clm_engine.builtins.operators`` registers them.

``test`` never raises for ordinary data: a value of the wrong type makes it false. The
compiler inlines the common ones (recognising these exact functions), so a change of meaning
here must be mirrored in ``codegen.py``; the property test in ``tests/test_conditions.py``
checks that both agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import re2

from ..models import DEFAULT_STAGES
from ..rulesets.problems import shown
from ..types import MISSING, FactContext
from .values import (
    NUMBER_TYPES,
    ContextValue,
    describe,
    parse_duration,
    strict_eq,
    to_datetime,
)

MAX_PATTERN_LENGTH = 1_000
MAX_MATCH_INPUT = 10_000

_SEQUENCES = (list, tuple)


@dataclass(frozen=True)
class Operator:
    """A built-in operator as it is registered."""

    name: str
    test: Callable[[Any, Any], bool]
    prepare: Callable[[Any], Any] | None
    accepts_missing: bool
    description: str
    #: The declared fact types it can test (None: any), and why a value does not suit a fact
    #: of a declared type (see "Checking values against fact types" below).
    fact_types: frozenset[str] | None = None
    check: Callable[[str, Any], str | None] | None = None


# -- prepare helpers ---------------------------------------------------------------------------


def _scalar(name: str, value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} needs a finite number (got {value!r})")
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, datetime):  # the value of another fact, at evaluation time
        return value
    if isinstance(value, list):
        raise ValueError(
            f"{name} compares with one value (a string, number, true/false or null); "
            "to test membership in a list use 'in'"
        )
    raise ValueError(
        f"{name} compares with one value (a string, number, true/false or null), "
        f"not {describe(value)}"
    )


def _comparable(name: str, value: Any) -> Any:
    """A number, a date (from ISO text or a datetime), or plain text: what lt/gt/between take."""
    if type(value) in NUMBER_TYPES:
        if type(value) is float and not math.isfinite(value):  # isfinite(10**400) overflows
            raise ValueError(f"{name} needs a finite number (got {value!r})")
        return value
    if isinstance(value, str | datetime):
        moment = to_datetime(value)
        return moment if moment is not None else value
    raise ValueError(
        f"{name} needs a number, a string or an ISO date like '2026-11-02' (got {describe(value)})"
    )


def _kind(value: Any) -> str:
    if isinstance(value, datetime):
        return "date"
    return "text" if isinstance(value, str) else "number"


# -- equality ----------------------------------------------------------------------------------


def prepare_eq(value: Any) -> Any:
    return _scalar("eq", value)


def prepare_ne(value: Any) -> Any:
    return _scalar("ne", value)


def test_eq(fact: Any, value: Any) -> bool:
    return strict_eq(fact, value)


def test_ne(fact: Any, value: Any) -> bool:
    return not strict_eq(fact, value)


def _eq_note(fact: Any, value: Any) -> str | None:
    if (type(fact) is bool) != (type(value) is bool) and {type(fact), type(value)} <= {
        bool,
        int,
        float,
    }:
        return "true/false is not a number: they never compare equal"
    return None


test_eq.explain_note = _eq_note  # type: ignore[attr-defined]  # explain_note: the optional attribute conditions/explain.py reads
test_ne.explain_note = _eq_note  # type: ignore[attr-defined]  # explain_note: the optional attribute conditions/explain.py reads


# -- ordering ----------------------------------------------------------------------------------


def _ordered(fact: Any, value: Any) -> Any:
    """The fact in the value's terms (a number, text or a date), or None when it cannot be."""
    kind = type(value)
    if kind is str:
        return fact if type(fact) is str else None
    if kind in NUMBER_TYPES:
        return fact if type(fact) in NUMBER_TYPES else None
    return to_datetime(fact)


def test_lt(fact: Any, value: Any) -> bool:
    fact = _ordered(fact, value)
    return fact is not None and fact < value


def test_lte(fact: Any, value: Any) -> bool:
    fact = _ordered(fact, value)
    return fact is not None and fact <= value


def test_gt(fact: Any, value: Any) -> bool:
    fact = _ordered(fact, value)
    return fact is not None and fact > value


def test_gte(fact: Any, value: Any) -> bool:
    fact = _ordered(fact, value)
    return fact is not None and fact >= value


def _order_note(fact: Any, value: Any) -> str | None:
    bounds = value if isinstance(value, tuple) else (value,)
    if _ordered(fact, bounds[0]) is None:
        shown = "true/false" if type(fact) is bool else type(fact).__name__
        if isinstance(bounds[0], datetime):
            return f"the fact ({shown}) is not a date, so it cannot be compared with a date"
        return f"the fact ({shown}) cannot be compared with {_kind(bounds[0])}"
    return None


def _prepare_order(name: str) -> Callable[[Any], Any]:
    def prepare(value: Any) -> Any:
        return _comparable(name, value)

    prepare.__name__ = f"prepare_{name}"
    return prepare


def prepare_between(value: Any) -> tuple[Any, Any]:
    hint = "between needs [low, high]: two numbers, two strings or two dates, low first"
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"{hint} (got {describe(value)})")
    low, high = (_comparable("between", bound) for bound in value)
    if _kind(low) != _kind(high):
        raise ValueError(f"{hint}; got a {_kind(low)} and a {_kind(high)}")
    if low > high:
        raise ValueError(
            f"between: the low bound {value[0]!r} is above the high bound {value[1]!r}"
        )
    return low, high


def test_between(fact: Any, value: tuple[Any, Any]) -> bool:
    low, high = value
    fact = _ordered(fact, low)
    return fact is not None and low <= fact <= high


_order_tests: tuple[Callable[..., bool], ...] = (test_lt, test_lte, test_gt, test_gte, test_between)
for _test in _order_tests:
    _test.explain_note = _order_note  # type: ignore[attr-defined]  # explain_note: the optional attribute conditions/explain.py reads


# -- membership --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Members:
    """The values of an ``in`` list, split by type so that membership is strict and fast."""

    strings: frozenset[str]
    numbers: frozenset[int | float]
    singletons: tuple[Any, ...]  # true, false, null

    def __contains__(self, fact: Any) -> bool:
        kind = type(fact)
        if kind is str:
            return fact in self.strings
        if kind in NUMBER_TYPES:
            return fact in self.numbers
        return any(fact is item for item in self.singletons)


def _prepare_members(name: str, value: Any) -> Members:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{name} needs a list of values like ['a', 'b'] (got {describe(value)})")
    strings, numbers, singletons = set(), set(), []
    for item in value:
        if type(item) is str:
            strings.add(item)
        elif type(item) is int or (type(item) is float and math.isfinite(item)):
            numbers.add(item)
        elif item is None or type(item) is bool:
            singletons.append(item)
        else:
            raise ValueError(
                f"{name}: the list may hold strings, numbers, true/false and null, "
                f"not {describe(item)}"
            )
    return Members(frozenset(strings), frozenset(numbers), tuple(singletons))


def prepare_in(value: Any) -> Members:
    return _prepare_members("in", value)


def prepare_not_in(value: Any) -> Members:
    return _prepare_members("not_in", value)


def test_in(fact: Any, value: Members) -> bool:
    return fact in value


def test_not_in(fact: Any, value: Members) -> bool:
    return fact not in value


def _prepare_needle(name: str) -> Callable[[Any], Any]:
    def prepare(value: Any) -> Any:
        if type(value) in (str, int, bool) or (type(value) is float and math.isfinite(value)):
            return value
        raise ValueError(
            f"{name} needs one string, number or true/false to look for (got {describe(value)})"
        )

    prepare.__name__ = f"prepare_{name}"
    return prepare


def _contains(fact: Any, value: Any) -> bool | None:
    """Whether the list or text ``fact`` holds ``value``; None when ``fact`` is neither."""
    kind = type(fact)
    if kind is str:
        return type(value) is str and value in fact
    if kind in _SEQUENCES:
        if type(value) is str:
            return value in fact
        return any(strict_eq(item, value) for item in fact)
    return None


def test_contains(fact: Any, value: Any) -> bool:
    return _contains(fact, value) is True


def test_not_contains(fact: Any, value: Any) -> bool:
    return _contains(fact, value) is False


def _contains_note(fact: Any, value: Any) -> str | None:
    if _contains(fact, value) is None:
        return "the fact is neither a list nor text"
    return None


test_contains.explain_note = _contains_note  # type: ignore[attr-defined]  # explain_note: the optional attribute conditions/explain.py reads
test_not_contains.explain_note = _contains_note  # type: ignore[attr-defined]  # explain_note: the optional attribute conditions/explain.py reads


# -- text --------------------------------------------------------------------------------------


def _prepare_text(name: str) -> Callable[[Any], Any]:
    def prepare(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"{name} needs a string (got {describe(value)})")
        return value

    prepare.__name__ = f"prepare_{name}"
    return prepare


def test_starts_with(fact: Any, value: str) -> bool:
    return type(fact) is str and fact.startswith(value)


def test_ends_with(fact: Any, value: str) -> bool:
    return type(fact) is str and fact.endswith(value)


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


@lru_cache(maxsize=512)
def _compile_pattern(pattern: str) -> Any:
    try:
        return re2.compile(pattern, options=_RE2_OPTIONS)
    except re2.error as error:
        reason = error.args[0] if error.args else error
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(
            f"matches: {pattern!r} is not a valid regular expression ({reason}); patterns use "
            "RE2 syntax, which has no lookaround and no backreferences"
        ) from None


def prepare_matches(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"matches needs a regular expression as a string (got {describe(value)})")
    if len(value) > MAX_PATTERN_LENGTH:
        raise ValueError(
            f"matches: the pattern is {len(value):,} characters long; the limit is "
            f"{MAX_PATTERN_LENGTH:,}"
        )
    return _compile_pattern(value)


def test_matches(fact: Any, pattern: Any) -> bool:
    if type(fact) is not str or len(fact) > MAX_MATCH_INPUT:
        return False
    return pattern.search(fact) is not None


def _matches_note(fact: Any, pattern: Any) -> str | None:
    if type(fact) is str and len(fact) > MAX_MATCH_INPUT:
        return (
            f"input longer than {MAX_MATCH_INPUT:,} characters ({len(fact):,}): "
            "not matched, by design"
        )
    if type(fact) is not str:
        return "the fact is not text"
    return None


test_matches.explain_note = _matches_note  # type: ignore[attr-defined]  # explain_note: the optional attribute conditions/explain.py reads


# -- presence ----------------------------------------------------------------------------------


def _prepare_flag(name: str) -> Callable[[Any], Any]:
    def prepare(value: Any) -> bool:
        if value is None:  # {"fact": "x", "op": "exists"} reads as "exists: true"
            return True
        if type(value) is not bool:
            raise ValueError(f"{name} needs true or false (got {describe(value)})")
        return value

    prepare.__name__ = f"prepare_{name}"
    return prepare


def test_exists(fact: Any, value: bool) -> bool:
    return (fact is not MISSING) is value


def test_is_null(fact: Any, value: bool) -> bool:
    return (fact is None or fact is MISSING) is value


# -- dates -------------------------------------------------------------------------------------

_NOW = ContextValue(lambda ctx: ctx.now, "now")
_DATE_HINT = (
    "an ISO date or time like '2026-11-02' or '2026-11-02T10:00:00Z', \"now\", or {\"fact\": ...}"
)


def _prepare_moment(name: str) -> Callable[[Any], Any]:
    def prepare(value: Any) -> Any:
        if value == "now":
            return _NOW
        moment = to_datetime(value) if isinstance(value, str | datetime) else None
        if moment is None:
            raise ValueError(f"{name} needs {_DATE_HINT} (got {describe(value)})")
        return moment

    prepare.__name__ = f"prepare_{name}"
    return prepare


def test_before(fact: Any, value: datetime) -> bool:
    moment = to_datetime(fact)
    return moment is not None and moment < to_datetime(value)  # type: ignore[operator]  # prepare_ made value a time


def test_after(fact: Any, value: datetime) -> bool:
    moment = to_datetime(fact)
    return moment is not None and moment > to_datetime(value)  # type: ignore[operator]  # prepare_ made value a time


def _date_note(fact: Any, value: Any) -> str | None:
    if to_datetime(fact) is None:
        return "the fact is not a date"
    return None


def _aware_now(ctx: FactContext) -> datetime:
    now = ctx.now
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _minus(now: datetime, delta: timedelta) -> datetime:
    """``now - delta``, or the earliest representable time when that is before year 1.

    Durations are bounded when a ruleset loads, but ``now`` is whatever the clock says (a
    virtual one may be anywhere): a window reaching before the first datetime holds every
    date, and nothing is older than such a cutoff, which is what the earliest time gives.
    """
    try:
        return now - delta
    except OverflowError:
        return _EARLIEST


def prepare_within_last(value: Any) -> ContextValue:
    delta = _duration("within_last", value)

    def window(ctx: FactContext) -> tuple[datetime, datetime]:
        now = _aware_now(ctx)
        return _minus(now, delta), now

    return ContextValue(window, f"the last {value!r}")


def prepare_older_than(value: Any) -> ContextValue:
    delta = _duration("older_than", value)

    def cutoff(ctx: FactContext) -> datetime:
        return _minus(_aware_now(ctx), delta)

    return ContextValue(cutoff, f"now minus {value!r}")


def _duration(name: str, value: Any) -> Any:
    try:
        return parse_duration(value)
    except ValueError as error:
        raise ValueError(f"{name} {error}") from None


def test_within_last(fact: Any, window: tuple[datetime, datetime]) -> bool:
    moment = to_datetime(fact)
    return moment is not None and window[0] <= moment <= window[1]


def test_older_than(fact: Any, cutoff: datetime) -> bool:
    moment = to_datetime(fact)
    return moment is not None and moment < cutoff


_date_tests: tuple[Callable[..., bool], ...] = (
    test_before,
    test_after,
    test_within_last,
    test_older_than,
)
for _test in _date_tests:
    _test.explain_note = _date_note  # type: ignore[attr-defined]  # explain_note: the optional attribute conditions/explain.py reads


# -- stages and segments -----------------------------------------------------------------------


def _prepare_stage(name: str) -> Callable[[Any], Any]:
    def prepare(value: Any) -> ContextValue:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} needs a stage name (got {describe(value)})")
        return ContextValue(lambda ctx: (ctx.stages or DEFAULT_STAGES, value), f"stage {value!r}")

    prepare.__name__ = f"prepare_{name}"
    return prepare


def _stage_order(fact: Any, value: tuple[tuple[str, ...], str]) -> int | None:
    stages, target = value
    if type(fact) is not str or fact not in stages or target not in stages:
        return None
    return stages.index(fact) - stages.index(target)


def test_stage_at_least(fact: Any, value: tuple[tuple[str, ...], str]) -> bool:
    order = _stage_order(fact, value)
    return order is not None and order >= 0


def test_stage_at_most(fact: Any, value: tuple[tuple[str, ...], str]) -> bool:
    order = _stage_order(fact, value)
    return order is not None and order <= 0


def _stage_note(fact: Any, value: tuple[tuple[str, ...], str]) -> str | None:
    stages, target = value
    if fact not in stages:
        return f"{describe(fact)} is not one of the stages {list(stages)}"
    if target not in stages:
        return f"{target!r} is not one of the stages {list(stages)}"
    return None


test_stage_at_least.explain_note = _stage_note  # type: ignore[attr-defined]  # explain_note: the optional attribute conditions/explain.py reads
test_stage_at_most.explain_note = _stage_note  # type: ignore[attr-defined]  # explain_note: the optional attribute conditions/explain.py reads


def prepare_in_segment(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"in_segment needs the name of a segment (got {describe(value)})")
    return value


def test_in_segment(fact: Any, value: Any) -> bool:
    """Never called: the compiler evaluates the named segment's condition instead."""
    raise RuntimeError("in_segment is evaluated by the condition compiler")


# -- checking values against fact types ------------------------------------------------------
#
# When a fact declares its type (a registered fact's ``type``, or a contact path: see
# ``facts.fact_type``), ``clm validate`` checks each leaf against it: an operator that cannot
# test that type is an error at ``/op``, a value that can never match at ``/value``. Facts of
# type "any" are not checked. ``docs/rulesets.md`` has the table.

_TYPE_WORDS = {
    "number": "a number",
    "text": "text",
    "boolean": "true/false",
    "time": "a time",
    "list": "a list",
    "mapping": "a mapping",
    "dates": "dates by entity",
}


def type_words(fact_type: str) -> str:
    """``"a number"``, ``"a time"``: a declared fact type in a sentence."""
    return _TYPE_WORDS.get(fact_type, fact_type)


def _is_number(value: Any) -> bool:
    return type(value) in NUMBER_TYPES


def _fits(fact_type: str, value: Any) -> bool:
    """Whether ``value`` (a JSON scalar) is of the kind a fact of ``fact_type`` holds."""
    if fact_type == "number":
        return _is_number(value)
    if fact_type == "text":
        return type(value) is str
    if fact_type == "boolean":
        return type(value) is bool
    return False


def _needs(fact_type: str) -> str:
    return {"number": "a number", "text": "a string", "boolean": "true or false"}[fact_type]


def check_equal(fact_type: str, value: Any) -> str | None:
    """eq / ne: a value of the fact's own kind, or null."""
    if value is None:
        return None
    if fact_type == "time":
        return f"it never equals {shown(value)}; compare times with before, after or between"
    if fact_type in ("number", "text", "boolean") and not _fits(fact_type, value):
        return f"it never equals {shown(value)} (write {_needs(fact_type)} or null)"
    return None


def _check_bound(fact_type: str, value: Any) -> str | None:
    if fact_type == "time":
        if isinstance(value, str | datetime) and to_datetime(value) is not None:
            return None
        return f"compare it with an ISO date like '2026-11-02', not {shown(value)}"
    if fact_type in ("number", "text") and not _fits(fact_type, value):
        return f"compare it with {_needs(fact_type)}, not {shown(value)}"
    return None


def check_order(fact_type: str, value: Any) -> str | None:
    """lt / lte / gt / gte: a number for a number, a string for text, an ISO date for a time."""
    return _check_bound(fact_type, value)


def check_between(fact_type: str, value: Any) -> str | None:
    if isinstance(value, list | tuple):
        for bound in value:
            problem = _check_bound(fact_type, bound)
            if problem:
                return problem
    return None


def check_members(fact_type: str, value: Any) -> str | None:
    """in / not_in: every item of the fact's own kind (or null)."""
    if not isinstance(value, list | tuple):
        return None
    plural = {"number": "numbers", "text": "strings", "boolean": "true, false"}
    for item in value:
        if item is not None and fact_type in plural and not _fits(fact_type, item):
            return f"the list may hold {plural[fact_type]} and null, not {shown(item)}"
    return None


def check_needle(fact_type: str, value: Any) -> str | None:
    """contains / not_contains: text holds only text."""
    if fact_type == "text" and type(value) is not str:
        return f"it can only contain a string, not {shown(value)}"
    return None


_EQUAL_TYPES = frozenset({"number", "text", "boolean", "time"})
_ORDER_TYPES = frozenset({"number", "text", "time"})
_MEMBER_TYPES = frozenset({"number", "text", "boolean"})
_CONTAINER_TYPES = frozenset({"list", "text"})
_TEXT_TYPES = frozenset({"text"})
_TIME_TYPES = frozenset({"time"})

#: Operators that compare a fact with a value of the same kind: a ``{"fact": ...}`` value of
#: another declared type can never match.
SAME_TYPE_OPERATORS = frozenset({"eq", "ne", "lt", "lte", "gt", "gte", "before", "after"})


OPERATORS: tuple[Operator, ...] = (
    Operator(
        "eq", test_eq, prepare_eq, False, "equal (strict: true is not 1)", _EQUAL_TYPES, check_equal
    ),
    Operator("ne", test_ne, prepare_ne, False, "present and not equal", _EQUAL_TYPES, check_equal),
    Operator(
        "lt",
        test_lt,
        _prepare_order("lt"),
        False,
        "less than (numbers, text or dates)",
        _ORDER_TYPES,
        check_order,
    ),
    Operator(
        "lte",
        test_lte,
        _prepare_order("lte"),
        False,
        "less than or equal",
        _ORDER_TYPES,
        check_order,
    ),
    Operator(
        "gt",
        test_gt,
        _prepare_order("gt"),
        False,
        "greater than (numbers, text or dates)",
        _ORDER_TYPES,
        check_order,
    ),
    Operator(
        "gte",
        test_gte,
        _prepare_order("gte"),
        False,
        "greater than or equal",
        _ORDER_TYPES,
        check_order,
    ),
    Operator(
        "between",
        test_between,
        prepare_between,
        False,
        "within [low, high], inclusive",
        _ORDER_TYPES,
        check_between,
    ),
    Operator(
        "in",
        test_in,
        prepare_in,
        False,
        "equal to one of a list of values",
        _MEMBER_TYPES,
        check_members,
    ),
    Operator(
        "not_in",
        test_not_in,
        prepare_not_in,
        False,
        "present and not in a list",
        _MEMBER_TYPES,
        check_members,
    ),
    Operator(
        "contains",
        test_contains,
        _prepare_needle("contains"),
        False,
        "list/text holds",
        _CONTAINER_TYPES,
        check_needle,
    ),
    Operator(
        "not_contains",
        test_not_contains,
        _prepare_needle("not_contains"),
        False,
        "list/text does not hold",
        _CONTAINER_TYPES,
        check_needle,
    ),
    Operator(
        "starts_with",
        test_starts_with,
        _prepare_text("starts_with"),
        False,
        "text prefix",
        _TEXT_TYPES,
    ),
    Operator(
        "ends_with", test_ends_with, _prepare_text("ends_with"), False, "text suffix", _TEXT_TYPES
    ),
    Operator(
        "matches",
        test_matches,
        prepare_matches,
        False,
        "RE2 regular expression search",
        _TEXT_TYPES,
    ),
    Operator("exists", test_exists, _prepare_flag("exists"), True, "the fact is present"),
    Operator("is_null", test_is_null, _prepare_flag("is_null"), True, "null or missing"),
    Operator(
        "before", test_before, _prepare_moment("before"), False, "date before a date", _TIME_TYPES
    ),
    Operator(
        "after", test_after, _prepare_moment("after"), False, "date after a date", _TIME_TYPES
    ),
    Operator(
        "within_last",
        test_within_last,
        prepare_within_last,
        False,
        "date within the last ...",
        _TIME_TYPES,
    ),
    Operator(
        "older_than",
        test_older_than,
        prepare_older_than,
        False,
        "date before now - ...",
        _TIME_TYPES,
    ),
    Operator(
        "stage_at_least",
        test_stage_at_least,
        _prepare_stage("stage_at_least"),
        False,
        "stage at or after a stage",
        _TEXT_TYPES,
    ),
    Operator(
        "stage_at_most",
        test_stage_at_most,
        _prepare_stage("stage_at_most"),
        False,
        "stage at or before a stage",
        _TEXT_TYPES,
    ),
    Operator(
        "in_segment",
        test_in_segment,
        prepare_in_segment,
        True,
        "the named segment's condition holds",
    ),
)

#: Operators whose value names a stage; the compiler checks the name against its stages.
STAGE_OPERATORS = frozenset({"stage_at_least", "stage_at_most"})

__all__ = [
    "OPERATORS",
    "SAME_TYPE_OPERATORS",
    "STAGE_OPERATORS",
    "Members",
    "Operator",
    "type_words",
]
