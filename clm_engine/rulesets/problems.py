"""What a validation problem is, where it is in the file, and how it reads.

Every check (JSON Schema, pydantic, semantic) speaks in *issues*: a JSON pointer and a message,
nothing about files or lines, so each check stays small and testable on plain data. The loader
turns issues into :class:`RulesetProblem` s by adding the file and the line:column the pointer
points at, which it finds with ``json_source_map`` only when a file has problems.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import RulesetError


@dataclass(frozen=True)
class Issue:
    """One thing wrong, located by a JSON pointer into the ruleset document.

    ``at_key`` says the position to report is the object key itself (an unknown or duplicate
    key), not its value.
    """

    pointer: str
    message: str
    hint: str | None = None
    at_key: bool = False


@dataclass(frozen=True)
class RulesetProblem:
    """One error in one ruleset file, fit to print on one line (and a hint under it)."""

    file: str
    pointer: str
    line: int | None
    column: int | None
    message: str
    hint: str | None = None

    def location(self) -> str:
        """``file:line:col`` (or just ``file`` when the problem has no position)."""
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}:{self.column or 1}"

    def __str__(self) -> str:
        where = self.location()
        return (
            f"{where}: {self.pointer}: {self.message}"
            if self.pointer
            else f"{where}: {self.message}"
        )

    def render(self) -> str:
        """The problem as :func:`str` gives it, with the hint (if any) indented under it."""
        return f"{self}\n    hint: {self.hint}" if self.hint else str(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "pointer": self.pointer,
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "hint": self.hint,
        }


def sort_key(problem: RulesetProblem) -> tuple[str, int, int, str, str]:
    """Problems sort by file, then line (file-level problems, without a line, come first)."""
    return (problem.file, problem.line or 0, problem.column or 0, problem.pointer, problem.message)


def summary(problems: Sequence[RulesetProblem]) -> str:
    """``3 problems in 2 files``."""
    files = len({p.file for p in problems})
    return f"{plural(len(problems), 'problem')} in {plural(files, 'file')}"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class RulesetValidationError(RulesetError):
    """Rulesets that failed validation; ``problems`` holds every problem, in order.

    The message's first line is the count, then one line per problem (hints indented), so
    printing the error is enough for a person.
    """

    def __init__(self, problems: Sequence[RulesetProblem]) -> None:
        self.problems: tuple[RulesetProblem, ...] = tuple(problems)
        lines = [f"invalid rulesets: {summary(self.problems)}"]
        lines.extend(problem.render() for problem in self.problems)
        super().__init__("\n".join(lines))


# -- JSON pointers (RFC 6901) ------------------------------------------------------------------


def escape(token: str | int) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def pointer(*tokens: str | int) -> str:
    """The JSON pointer of a path: ``pointer("rules", 2, "then")`` is ``/rules/2/then``."""
    return "".join("/" + escape(token) for token in tokens)


def join(base: str, relative: str) -> str:
    """``join("/rules/0/if", "/all/1")``: a pointer relative to ``base`` made absolute."""
    if relative and not relative.startswith("/"):
        relative = "/" + relative
    return base + relative


def split(text: str) -> list[str]:
    if not text:
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in text[1:].split("/")]


# -- Helping people with names -----------------------------------------------------------------


def did_you_mean(name: str, known: Iterable[str], *, cutoff: float = 0.6) -> str:
    """``"; did you mean 'tag.add'?"`` when a known name is close to ``name``, else ``""``."""
    match = closest(name, known, cutoff=cutoff)
    return f"; did you mean {match!r}?" if match else ""


def closest(name: str, known: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    matches = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=cutoff)
    return matches[0] if matches else None


#: What people write for the built-in operators, by meaning: consulted before spelling, so
#: ``greater_than`` is answered with ``gt`` (spelling alone finds ``older_than``). Keys are
#: compared as :func:`_operator_key` makes them: case, ``_``, ``-`` and spaces do not count.
OPERATOR_SYNONYMS: dict[str, str] = {
    "=": "eq",
    "==": "eq",
    "===": "eq",
    "equal": "eq",
    "equals": "eq",
    "equalto": "eq",
    "isequalto": "eq",
    "is": "eq",
    "same": "eq",
    "!=": "ne",
    "!==": "ne",
    "<>": "ne",
    "neq": "ne",
    "notequal": "ne",
    "notequals": "ne",
    "notequalto": "ne",
    "isnot": "ne",
    "isnt": "ne",
    "different": "ne",
    "<": "lt",
    "less": "lt",
    "lessthan": "lt",
    "below": "lt",
    "under": "lt",
    "fewerthan": "lt",
    "<=": "lte",
    "=<": "lte",
    "le": "lte",
    "lessthanorequal": "lte",
    "lessthanorequalto": "lte",
    "lessorequal": "lte",
    "atmost": "lte",
    "max": "lte",
    ">": "gt",
    "greater": "gt",
    "greaterthan": "gt",
    "morethan": "gt",
    "above": "gt",
    "over": "gt",
    ">=": "gte",
    "ge": "gte",
    "greaterthanorequal": "gte",
    "greaterthanorequalto": "gte",
    "greaterorequal": "gte",
    "atleast": "gte",
    "min": "gte",
    "inrange": "between",
    "range": "between",
    "oneof": "in",
    "isin": "in",
    "isoneof": "in",
    "anyof": "in",
    "notoneof": "not_in",
    "noneof": "not_in",
    "nin": "not_in",
    "isnotin": "not_in",
    "notin": "not_in",
    "has": "contains",
    "includes": "contains",
    "include": "contains",
    "contain": "contains",
    "hasnot": "not_contains",
    "excludes": "not_contains",
    "doesnotcontain": "not_contains",
    "notcontain": "not_contains",
    "notincludes": "not_contains",
    "beginswith": "starts_with",
    "startswith": "starts_with",
    "prefix": "starts_with",
    "suffix": "ends_with",
    "regex": "matches",
    "regexp": "matches",
    "re": "matches",
    "match": "matches",
    "like": "matches",
    "exist": "exists",
    "present": "exists",
    "isset": "exists",
    "defined": "exists",
    "isdefined": "exists",
    "hasvalue": "exists",
    "null": "is_null",
    "isnone": "is_null",
    "isnil": "is_null",
    "missing": "is_null",
    "earlierthan": "before",
    "isbefore": "before",
    "laterthan": "after",
    "isafter": "after",
    "since": "after",
    "within": "within_last",
    "inthelast": "within_last",
    "inlast": "within_last",
    "withinthelast": "within_last",
    "notwithinlast": "older_than",
    "notwithin": "older_than",
    "morethanago": "older_than",
    "stageafter": "stage_at_least",
    "stagegte": "stage_at_least",
    "minstage": "stage_at_least",
    "stagebefore": "stage_at_most",
    "stagelte": "stage_at_most",
    "maxstage": "stage_at_most",
    "segment": "in_segment",
    "insegment": "in_segment",
    "isinsegment": "in_segment",
}


def _operator_key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch not in "_- ")


def closest_operator(name: str, known: Iterable[str]) -> str | None:
    """The known operator ``name`` most likely means: by meaning (:data:`OPERATOR_SYNONYMS`),
    then the same name in other case or separators (``GTE``, ``not-in``), then by spelling."""
    known = sorted(set(known))
    key = _operator_key(name)
    meant = OPERATOR_SYNONYMS.get(key)
    if meant in known:
        return meant
    same = [k for k in known if _operator_key(k) == key and k != name]
    if same:
        return same[0]
    return closest(name, known)


def did_you_mean_operator(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'gt'?"`` for an unknown operator, by meaning or spelling."""
    match = closest_operator(name, known)
    return f"; did you mean {match!r}?" if match else ""


def quoted_list(names: Iterable[str], *, conjunction: str = "or") -> str:
    """``'a', 'b' or 'c'``."""
    items = [repr(n) for n in names]
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def shown(value: Any, *, limit: int = 40) -> str:
    """A short description of a JSON value for "found ..." messages."""
    kind = json_type(value)
    if kind == "object":
        return "an object"
    if kind == "array":
        return "a list"
    if kind == "null":
        return "null"
    text = repr(value) if kind == "string" else _json_literal(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{article(kind)} {kind} {text}"


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _json_literal(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return repr(value)


def json_type(value: Any) -> str:
    """The JSON type name of a decoded JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
