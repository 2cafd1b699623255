"""JSON Schema errors, turned into messages an ops person can act on.

``jsonschema`` reports a bad condition as "is not valid under any of the given schemas", with
the reasons for every alternative (is it an ``all``? an ``any``? a leaf?) hidden in the error's
context. People do not think in alternatives: a node with an ``all`` key *is* an ``all``. So
for every ``anyOf`` / ``oneOf`` this module picks the alternative the document meant (first by
JSON type, then by the key that names it: ``all`` / ``any`` / ``not`` / ``fact`` / ``op`` for
conditions, ``event`` / ``stage_changed`` / ``schedule`` / ``before`` / ``after`` for
triggers) and reports only that alternative's errors. Unknown keys get a "did you mean".
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator, Sequence
from functools import lru_cache
from typing import Any, Protocol, cast

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from ..models import CALENDAR_PERIOD, fixed_days
from .problems import (
    OPERATOR_SYNONYMS,
    Issue,
    article,
    did_you_mean,
    did_you_mean_operator,
    json_type,
    pointer,
    quoted_list,
    shown,
)
from .schema import SCHEMA_TITLE, load_schema

#: The keys that say which alternative an object is, by definition name.
DISCRIMINATORS: dict[str, tuple[str, ...]] = {
    "All": ("all",),
    "AnyOf": ("any",),
    "Not": ("not",),
    "Leaf": ("fact", "op"),
    "EventTrigger": ("event",),
    "StageTrigger": ("stage_changed",),
    "ScheduleTrigger": ("schedule",),
    "RelativeTrigger": ("before", "after"),
    "RecurringTrigger": ("every", "on"),
    "FactRef": ("fact",),
    "Duration": ("weeks", "days", "hours", "minutes"),
}

CONDITIONS = frozenset({"All", "AnyOf", "Not", "Leaf"})
TRIGGERS = frozenset(
    {"EventTrigger", "StageTrigger", "ScheduleTrigger", "RelativeTrigger", "RecurringTrigger"}
)

CONDITION_SHAPES = (
    '{"all": [...]}, {"any": [...]}, {"not": {...}} or a leaf {"fact": ..., "op": ..., '
    '"value": ...}'
)
TRIGGER_SHAPES = (
    '{"event": ...}, {"stage_changed": {...}}, {"schedule": ...}, {"before": ...}, {"after": ...}'
    ' or {"every": ..., "on": ...}'
)

#: What each kind of object is called in messages, by definition title.
KINDS: dict[str, str] = {
    SCHEMA_TITLE: "ruleset",
    "Rule": "rule",
    "ActionCall": "action call",
    "Limit": "limit",
    "All": "condition",
    "AnyOf": "condition",
    "Not": "condition",
    "Leaf": "condition",
    "EventTrigger": "event trigger",
    "StageTrigger": "stage_changed trigger",
    "StageChange": "stage_changed",
    "ScheduleTrigger": "schedule trigger",
    "RelativeTrigger": "relative-time trigger",
    "RecurringTrigger": "recurring trigger",
    "Duration": "duration",
    "FactRef": "fact reference",
}

#: What a pattern means, for "is not ..." messages.
PATTERNS: dict[str, str] = {
    r"^[a-z0-9][a-z0-9_.-]*$": (
        "a valid name (lowercase letters, digits, '_', '.' and '-', starting with a letter or "
        "digit)"
    ),
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_-]+)*$": (
        "a fact path (dotted names like 'contact.metrics.orders_count')"
    ),
    r"^[A-Za-z][A-Za-z0-9_.:-]*$": (
        "an event type (a letter, then letters, digits, '_', '.', ':' or '-')"
    ),
    r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$": "an action name (lowercase dotted names like 'tag.add')",
    r"^[a-z][a-z0-9_]*$": "an operator name (lowercase letters, digits and '_', like 'gte')",
    r"^P(\d+W)?(\d+D)?(T(\d+H)?(\d+M)?(\d+S)?)?$": (
        "an ISO 8601 duration (like 'P30D', 'PT12H' or 'P1W')"
    ),
    CALENDAR_PERIOD: "a calendar period (like 'P1Y' for yearly, 'P1M' monthly, 'P3M' quarterly)",
    r"^([01][0-9]|2[0-3]):[0-5][0-9]$": "a time of day as HH:MM (like '09:00' or '18:30')",
}

_DURATION_PATTERN = r"^P(\d+W)?(\d+D)?(T(\d+H)?(\d+M)?(\d+S)?)?$"

_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
_OPERATOR_PATTERN = r"^[a-z][a-z0-9_]*$"

_TYPE_WORDS = {
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true/false",
    "null": "null",
}


def schema_issues(document: Any) -> list[Issue]:
    """Every JSON Schema error in ``document``, explained; empty when it is valid."""
    explainer = _Explainer(load_schema())
    issues: list[Issue] = []
    for error in _validator().iter_errors(document):
        issues.extend(explainer.explain(error))
    return list(dict.fromkeys(issues))


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return Draft202012Validator(load_schema())


class _Failure(Protocol):
    """A ``ValidationError`` as the validator raises it: the stubs allow each field to be
    unset, but a raised error has them all, and our schema's failing subschemas are objects."""

    @property
    def message(self) -> str: ...
    @property
    def validator(self) -> str: ...
    @property
    def validator_value(self) -> Any: ...
    @property
    def instance(self) -> Any: ...
    @property
    def schema(self) -> dict[str, Any]: ...
    @property
    def absolute_path(self) -> Sequence[str | int]: ...
    @property
    def relative_schema_path(self) -> Sequence[str | int]: ...
    @property
    def context(self) -> list[ValidationError]: ...


class _Explainer:
    def __init__(self, root: dict[str, Any]) -> None:
        self.defs: dict[str, dict[str, Any]] = root["$defs"]

    # -- one error -------------------------------------------------------------------------

    def explain(self, raised: ValidationError) -> list[Issue]:
        error = cast(_Failure, raised)  # the fields a raised error has (see _Failure)
        where = pointer(*error.absolute_path)
        handler = getattr(self, f"_on_{error.validator}", None)
        if handler is None:
            return [Issue(where, _first_lower(error.message))]
        return list(handler(error, where))

    def _on_anyOf(self, error: _Failure, where: str) -> Iterator[Issue]:
        yield from self._alternatives(error, where)

    def _on_oneOf(self, error: _Failure, where: str) -> Iterator[Issue]:
        branches = error.validator_value
        exclusive = [b.get("required", [None])[0] for b in branches if set(b) == {"required"}]
        if len(exclusive) == len(branches) and isinstance(error.instance, dict):
            present = [key for key in exclusive if key in error.instance]
            kind = self._kind(error.schema)
            if present:
                yield Issue(
                    where,
                    f"a {kind} takes only one of {quoted_list(exclusive)}, found "
                    f"{quoted_list(present, conjunction='and')}",
                )
            else:
                yield Issue(where, f"a {kind} needs one of {quoted_list(exclusive)}")
            return
        yield from self._alternatives(error, where)

    def _on_additionalProperties(self, error: _Failure, where: str) -> Iterator[Issue]:
        allowed = list(error.schema.get("properties", {}))
        patterns = list(error.schema.get("patternProperties", {}))
        kind = self._kind(error.schema)
        for key in error.instance:
            if key in allowed or any(re.search(p, key) for p in patterns):
                continue
            yield Issue(
                where + pointer(key),
                f"unknown key {key!r} in {kind}{did_you_mean(key, allowed)}",
                hint=f"a {kind} has the keys {quoted_list(allowed, conjunction='and')}",
                at_key=True,
            )

    def _on_required(self, error: _Failure, where: str) -> Iterator[Issue]:
        kind = self._kind(error.schema)
        for key in error.validator_value:
            if key in error.instance:
                continue
            description = error.schema.get("properties", {}).get(key, {}).get("description")
            yield Issue(
                where + pointer(key),
                f"missing required key {key!r} in {kind}",
                hint=f"{key!r}: {_first_lower(description)}" if description else None,
            )

    def _on_type(self, error: _Failure, where: str) -> Iterator[Issue]:
        expected = error.validator_value
        names = [expected] if isinstance(expected, str) else list(expected)
        yield Issue(where, f"expected {_words(names)}, found {shown(error.instance)}")

    def _on_pattern(self, error: _Failure, where: str) -> Iterator[Issue]:
        meaning = PATTERNS.get(error.validator_value, f"matching {error.validator_value}")
        value = error.instance
        hint = None
        if error.validator_value == _NAME_PATTERN and isinstance(value, str):
            slug = re.sub(r"[^a-z0-9_.-]+", "-", value.lower()).strip("-_.")
            hint = f"try {slug!r}" if slug else None
        suggestion = ""
        if error.validator_value == _OPERATOR_PATTERN and isinstance(value, str):
            suggestion = did_you_mean_operator(value, set(OPERATOR_SYNONYMS.values()))
        if isinstance(value, str):
            hint = _duration_hint(error.validator_value, value) or hint
        if "propertyNames" in error.relative_schema_path:
            # A key of a map (a segment name): point at the key itself.
            yield Issue(where + pointer(value), f"{value!r} is not {meaning}", hint, at_key=True)
            return
        yield Issue(where, f"{value!r} is not {meaning}{suggestion}", hint)

    def _on_minLength(self, error: _Failure, where: str) -> Iterator[Issue]:
        size = error.validator_value
        if "propertyNames" in error.relative_schema_path:
            yield Issue(where, "a name must not be empty")
        elif size == 1:
            yield Issue(where, "must not be empty")
        else:
            yield Issue(
                where, f"expected at least {size} characters, found {shown(error.instance)}"
            )

    def _on_maxLength(self, error: _Failure, where: str) -> Iterator[Issue]:
        yield Issue(
            where,
            f"too long: at most {error.validator_value} characters, found {len(error.instance)}",
        )

    def _on_minItems(self, error: _Failure, where: str) -> Iterator[Issue]:
        size = error.validator_value
        found = len(error.instance)
        if size == 1:
            yield Issue(where, "expected at least one item, found an empty list")
        else:
            yield Issue(where, f"expected at least {size} items, found {found}")

    def _on_minimum(self, error: _Failure, where: str) -> Iterator[Issue]:
        yield Issue(where, f"expected at least {error.validator_value}, found {error.instance}")

    def _on_enum(self, error: _Failure, where: str) -> Iterator[Issue]:
        options = [str(o) for o in error.validator_value]
        found = error.instance
        suggestion = did_you_mean(found, options) if isinstance(found, str) else ""
        yield Issue(where, f"expected {quoted_list(options)}, found {shown(found)}{suggestion}")

    def _on_const(self, error: _Failure, where: str) -> Iterator[Issue]:
        yield Issue(where, f"expected {error.validator_value!r}, found {shown(error.instance)}")

    # -- alternatives (anyOf / oneOf) ------------------------------------------------------

    def _alternatives(self, error: _Failure, where: str) -> Iterator[Issue]:
        branches: Sequence[dict[str, Any]] = error.validator_value
        instance = error.instance
        fitting = [i for i, b in enumerate(branches) if self._accepts_type(b, instance)]
        if not fitting:
            yield Issue(where, f"expected {self._expected(branches)}, found {shown(instance)}")
            return
        chosen: int | None = fitting[0]
        if len(fitting) > 1 and isinstance(instance, dict):
            chosen = yield from self._by_key(branches, fitting, instance, where)
        elif len(fitting) > 1:
            chosen = self._deeper(error, fitting)
            if chosen is None:
                expected = self._expected([branches[i] for i in fitting])
                yield Issue(where, f"expected {expected}, found {shown(instance)}")
                return
        if chosen is None:
            return
        for sub in error.context or ():
            if sub.relative_schema_path and sub.relative_schema_path[0] == chosen:
                yield from self.explain(sub)

    def _deeper(self, error: _Failure, fitting: list[int]) -> int | None:
        """The one alternative whose errors are inside the value (a list's items), if any."""
        depth = len(error.absolute_path)
        inside = {
            sub.relative_schema_path[0]
            for sub in error.context or ()
            if sub.relative_schema_path
            and sub.relative_schema_path[0] in fitting
            and len(sub.absolute_path) > depth
        }
        return inside.pop() if len(inside) == 1 else None

    def _by_key(
        self,
        branches: Sequence[dict[str, Any]],
        fitting: list[int],
        instance: dict[str, Any],
        where: str,
    ) -> Generator[Issue, None, int | None]:
        """The alternative an object means, by the keys it has; ``None`` once explained."""
        names = {i: self._def_name(branches[i]) for i in fitting}
        group = _group(names.values())
        named = [i for i in fitting if set(DISCRIMINATORS.get(names[i] or "", ())) & set(instance)]
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            keys = [
                key
                for key in instance
                if any(key in DISCRIMINATORS.get(names[i] or "", ()) for i in named)
            ]
            yield Issue(
                where,
                f"found {quoted_list(keys, conjunction='and')} in one {group}; "
                f"{article(group)} {group} is one of {self._shapes(names.values())}",
            )
            return None
        scores = {i: len(set(instance) & set(self._properties(branches[i]))) for i in fitting}
        best = max(scores.values())
        if best and list(scores.values()).count(best) == 1:
            return max(scores, key=scores.__getitem__)
        allowed = [key for i in fitting for key in self._properties(branches[i])]
        unknown = [key for key in instance if key not in allowed]
        for key in unknown:
            yield Issue(
                where + pointer(key),
                f"unknown key {key!r} in {group}{did_you_mean(key, allowed)}",
                hint=f"{article(group)} {group} is one of {self._shapes(names.values())}",
                at_key=True,
            )
        if not unknown:
            found = "an empty object" if not instance else f"keys {quoted_list(list(instance))}"
            yield Issue(where, f"expected {self._shapes(names.values())}, found {found}")
        return None

    # -- reading the schema ----------------------------------------------------------------

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return self.defs[ref.rsplit("/", 1)[1]]
        return schema

    def _def_name(self, schema: dict[str, Any]) -> str | None:
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return ref.rsplit("/", 1)[1]
        return None

    def _properties(self, schema: dict[str, Any]) -> list[str]:
        return list(self._resolve(schema).get("properties", {}))

    def _accepts_type(self, schema: dict[str, Any], instance: Any) -> bool:
        schema = self._resolve(schema)
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema and "type" not in schema:
                return any(self._accepts_type(b, instance) for b in schema[keyword])
        expected = schema.get("type")
        if expected is None:
            return True
        names = [expected] if isinstance(expected, str) else expected
        found = json_type(instance)
        if found == "integer" and "number" in names:
            return True
        if found == "number" and "integer" in names and float(instance).is_integer():
            return True
        return found in names

    def _expected(self, branches: Sequence[dict[str, Any]]) -> str:
        words: list[str] = []
        for branch in branches:
            for word in self._branch_words(branch):
                if word not in words:
                    words.append(word)
        if len(words) > 1 and "null" in words:
            words.remove("null")  # "or null" only says the key is optional
        return _either(words)

    def _branch_words(self, branch: dict[str, Any]) -> list[str]:
        name = self._def_name(branch)
        if name in CONDITIONS:
            return ["a condition object"]
        if name in TRIGGERS:
            return ["a trigger object"]
        if name == "Duration":
            return ['a duration like {"days": 30}']
        if name == "FactRef":
            return ['{"fact": ...}']
        schema = self._resolve(branch)
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema:
                return [w for b in schema[keyword] for w in self._branch_words(b)]
        if "const" in schema:
            return [repr(schema["const"])]
        expected = schema.get("type")
        if expected is None:
            return ["any value"]
        if expected == "string" and "pattern" in schema and schema["pattern"] in PATTERNS:
            return [PATTERNS[schema["pattern"]].split(" (")[0]]
        return [_words([expected] if isinstance(expected, str) else expected)]

    def _shapes(self, names: Any) -> str:
        names = set(names)
        if names & CONDITIONS:
            return CONDITION_SHAPES
        if names & TRIGGERS:
            return TRIGGER_SHAPES
        return " or ".join(sorted(n for n in names if n))

    def _kind(self, schema: dict[str, Any]) -> str:
        return KINDS.get(schema.get("title", ""), "object")


def _group(names: Any) -> str:
    names = set(names)
    if names & CONDITIONS:
        return "condition"
    if names & TRIGGERS:
        return "trigger"
    return "value"


def _words(type_names: Sequence[str]) -> str:
    return _either([_TYPE_WORDS.get(name, name) for name in type_names])


def _either(words: list[str]) -> str:
    """``a string, a number or true/false``: an integer is a number, so it goes unsaid."""
    if "a number" in words and "an integer" in words:
        words = [w for w in words if w != "an integer"]
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} or {words[-1]}"


def _duration_hint(pattern: str, value: str) -> str | None:
    """What to write instead of a calendar duration where a fixed one is needed, and of a
    fixed one where a calendar period is needed."""
    if pattern == _DURATION_PATTERN:
        fixed = fixed_days(value)
        if fixed is None:
            return None
        return (
            "years and months differ in length, so a delay, cooldown or window takes days: "
            f"write 'P{fixed}D' (or {{\"days\": {fixed}}}); to repeat on the same date every "
            'year or month, use a recurring trigger: {"every": "P1Y", "on": "<date fact>"}'
        )
    if pattern == CALENDAR_PERIOD:
        return (
            "a recurring trigger repeats on the same calendar date: write 'P1Y' (yearly) or "
            "'P1M' (monthly, 'P3M' quarterly); for a fixed length after a date, use a relative "
            'trigger {"after": "<date fact>", "days": 30}; for a weekly rhythm, a schedule '
            'trigger {"schedule": "0 9 * * MON"}'
        )
    return None


def _first_lower(text: str) -> str:
    return text[:1].lower() + text[1:]
