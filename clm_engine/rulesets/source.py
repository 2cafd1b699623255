"""Reading a ruleset file's text: JSON syntax, duplicate keys, and where a pointer is.

Syntax errors carry the decoder's own line and column. A key written twice in one object is
valid JSON that silently keeps the last value (two ``"if"`` s: one is ignored), so it is
reported as a problem too. Positions of pointers come from ``json_source_map``, computed only
for files that have problems.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..models import json_constant
from .problems import Issue, pointer, split


class _Object(dict[str, Any]):
    """A decoded JSON object that remembers the keys it saw more than once."""

    duplicates: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    result = _Object()
    seen: list[str] = []
    for key, value in pairs:
        if key in result and key not in seen:
            seen.append(key)
        result[key] = value
    if seen:
        result.duplicates = tuple(seen)
    return result


@dataclass(frozen=True)
class SyntaxProblem:
    line: int
    column: int
    message: str
    hint: str | None


def parse(text: str) -> tuple[Any, SyntaxProblem | None]:
    """The decoded document, or the syntax error with its 1-based line and column."""
    try:
        return json.loads(text, object_pairs_hook=_object), None
    except json.JSONDecodeError as error:
        return None, SyntaxProblem(
            error.lineno, error.colno, f"invalid JSON: {error.msg}", _syntax_hint(error)
        )
    except RecursionError:
        return None, SyntaxProblem(1, 1, "invalid JSON: nested too deeply", None)


def _syntax_hint(error: json.JSONDecodeError) -> str | None:
    before = error.doc[: error.pos].rstrip()
    if not error.doc.strip():
        return "the file is empty; a ruleset is one JSON object"
    if error.pos >= len(error.doc.rstrip()) and not error.msg.startswith("Extra data"):
        return "the file ends before the JSON does: a closing '}' or ']' is missing"
    if error.msg.startswith("Expecting property name") or (
        error.msg == "Expecting value" and before.endswith(",")
    ):
        if before.endswith(","):
            return "remove the comma after the last item: JSON allows no trailing commas"
        if before.endswith("{"):
            return 'keys need double quotes: {"key": value}'
    if error.msg == "Expecting ',' delimiter":
        return "a comma is missing between two items (just before this point)"
    if error.msg.startswith("Unterminated string"):
        return "this string has no closing '\"'"
    if error.msg == "Extra data":
        return "there is more after the end of the ruleset object: a file holds one ruleset"
    if error.msg.startswith("Invalid control character"):
        return "write a line break inside a string as \\n"
    return None


def duplicate_keys(document: Any, path: tuple[str | int, ...] = ()) -> list[Issue]:
    """An issue for each key written twice in one object, at the key that counts (the last)."""
    issues = []
    if isinstance(document, dict):
        for key in getattr(document, "duplicates", ()):
            issues.append(
                Issue(
                    pointer(*path, key),
                    f"key {key!r} appears more than once in this object; JSON keeps only the "
                    "last one",
                    hint="remove or merge the other one",
                    at_key=True,
                )
            )
        for key, value in document.items():
            issues += duplicate_keys(value, (*path, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            issues += duplicate_keys(value, (*path, index))
    return issues


#: How deep JSON may nest. Conditions may nest 32 levels (each an object and often a list);
#: far deeper documents would exhaust the recursion of the validators.
MAX_NESTING = 100


def too_deep(document: Any, limit: int = MAX_NESTING) -> Issue | None:
    """An issue at the first value nested deeper than ``limit``, or None."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(document, ())]
    while stack:
        node, path = stack.pop()
        if len(path) > limit:
            return Issue(
                pointer(*path),
                f"nested more than {limit} levels deep",
                hint="move part of the condition into a segment",
            )
        if isinstance(node, dict):
            stack.extend((value, (*path, key)) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend((value, (*path, index)) for index, value in enumerate(node))
    return None


def non_finite_numbers(document: Any) -> list[Issue]:
    """An issue at each NaN or infinity: Python's JSON reader accepts ``NaN``, ``Infinity`` and
    numbers too large for a float (``1e999``), JSON has none of them, and one in an action's
    parameters (``score.add`` points) would reach a contact as a number no store can hold."""
    issues = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(document, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            issues.append(
                Issue(
                    pointer(*path),
                    f"{json_constant(node)} is not a JSON number",
                    hint="write a finite number: JSON has no NaN or Infinity, and a number "
                    "too large for a float (1e999) becomes Infinity",
                )
            )
        elif isinstance(node, dict):
            stack.extend((value, (*path, key)) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend((value, (*path, index)) for index, value in enumerate(node))
    return issues


def plain(document: Any) -> Any:
    """``document`` with plain dicts: what the rest of the engine expects."""
    if isinstance(document, dict):
        return {key: plain(value) for key, value in document.items()}
    if isinstance(document, list):
        return [plain(value) for value in document]
    return document


@dataclass
class Locator:
    """Line and column (1-based) of a JSON pointer in a document's text."""

    text: str
    _entries: dict[str, Any] | None = field(default=None, repr=False)

    def position(self, at: str, *, at_key: bool = False) -> tuple[int | None, int | None]:
        """Where ``at`` is; a pointer to a missing key gives its nearest existing parent."""
        entries = self._map()
        if entries is None:
            return None, None
        tokens = split(at)
        exact = True
        while True:
            # json_source_map builds pointers from the raw key text, without escaping.
            entry = entries.get("".join("/" + t for t in tokens))
            if entry is not None:
                break
            if not tokens:
                return None, None
            tokens.pop()
            exact = False
        spot = entry.key_start if (at_key and exact and entry.key_start) else entry.value_start
        return spot.line + 1, spot.column + 1

    def _map(self) -> dict[str, Any] | None:
        if self._entries is None:
            from json_source_map import calculate

            try:
                self._entries = calculate(self.text)
            except Exception:  # it re-parses by itself; never let positions cost a problem
                self._entries = {}
        return self._entries
