"""pydantic validation errors as issues with JSON pointers.

A pydantic ``loc`` mixes three things: keys of the document (by alias, or by field name such
as ``if_``), list indexes, and the names of union members it tried (``'EventTrigger'``,
``'function-after[_one_anchor(), RelativeTrigger]'``, ``'str'``). Only the first two belong in
a pointer, and only the member the document meant is worth reporting. So the loc is walked
alongside the document: a step that is a key or index of the node at hand is kept, anything
else is a union member and is dropped, and errors from members the document plainly did not
mean (a wrong type, or an object without the member's key) are left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from .problems import Issue, did_you_mean, pointer, shown
from .schema_errors import CONDITIONS, DISCRIMINATORS, TRIGGERS

#: Field names that differ from the JSON key.
ALIASES = {"if_": "if", "with_": "with", "not_": "not", "from_": "from", "schema_": "$schema"}

#: Errors that only say "the document is not this member of the union".
_WRONG_MEMBER = frozenset(
    {
        "model_type",
        "model_attributes_type",
        "dict_type",
        "list_type",
        "string_type",
        "int_type",
        "int_parsing",
        "int_from_float",
        "float_type",
        "float_parsing",
        "bool_type",
        "bool_parsing",
        "literal_error",
        "none_required",
        "is_instance_of",
        "union_tag_invalid",
    }
)

#: Plain words for the type errors people meet most.
_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true/false",
    "bool_parsing": "true/false",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}

_GROUPS = (CONDITIONS, TRIGGERS, frozenset({"FactRef", "Duration"}))
_CLASS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class _Located:
    steps: tuple[str | int, ...]
    members: tuple[tuple[int, str, Any], ...]  # (steps before it, member name, node there)
    error: ErrorDetails
    key_error: bool  # a map key failed (``[key]``): point at the key


def pydantic_issues(
    error: ValidationError,
    document: Any,
    *,
    base: str = "",
    noun: str = "key",
    known: Iterable[str] | None = None,
) -> list[Issue]:
    """The issues of ``error``, raised validating ``document``, with pointers under ``base``.

    ``noun`` names what a top-level key is ("parameter" for an action's ``with``); ``known``
    are the top-level keys, for "did you mean" on an unknown one.
    """
    located = [_locate(item, document) for item in error.errors(include_url=False)]
    meant = [item for item in located if all(_meant(item, m) for m in item.members)]
    issues = [_issue(item, base, noun, known) for item in (meant or located)]
    return list(dict.fromkeys(issues))


def _locate(item: ErrorDetails, document: Any) -> _Located:
    steps: list[str | int] = []
    members: list[tuple[int, str, Any]] = []
    node = document
    loc = item["loc"]
    key_error = False
    for index, raw in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(node, list) and isinstance(raw, int):
            steps.append(raw)
            node = node[raw] if 0 <= raw < len(node) else None
            continue
        key = ALIASES.get(raw, raw) if isinstance(raw, str) else raw
        if isinstance(node, dict) and (key in node or (last and item["type"] == "missing")):
            steps.append(key)
            node = node.get(key)
            continue
        if raw == "[key]":
            key_error = True
            continue
        members.append((len(steps), str(raw), node))
    return _Located(tuple(steps), tuple(members), item, key_error)


def _meant(item: _Located, member: tuple[int, str, Any]) -> bool:
    """Whether the document meant this union member (so its errors are worth reporting)."""
    depth, name, node = member
    classes = [c for c in _CLASS.findall(name) if c in DISCRIMINATORS]
    if classes and isinstance(node, dict):
        cls = classes[-1]
        if set(DISCRIMINATORS[cls]) & set(node):
            return True
        group = next((g for g in _GROUPS if cls in g), frozenset({cls}))
        # No member of the group is named by a key: keep them all rather than say nothing.
        return not any(set(DISCRIMINATORS[c]) & set(node) for c in group)
    at_member = len(item.steps) == depth
    return not (at_member and item.error["type"] in _WRONG_MEMBER)


def _issue(item: _Located, base: str, noun: str, known: Iterable[str] | None) -> Issue:
    error = item.error
    kind = error["type"]
    where = base + pointer(*item.steps)
    name = item.steps[-1] if item.steps else None
    if kind == "missing":
        return Issue(where, f"missing required {noun if len(item.steps) == 1 else 'key'} {name!r}")
    if kind == "extra_forbidden":
        suggestion = ""
        if known is not None and len(item.steps) == 1 and isinstance(name, str):
            suggestion = did_you_mean(name, known)
        label = noun if len(item.steps) == 1 else "key"
        return Issue(where, f"unknown {label} {name!r}{suggestion}", at_key=True)
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return Issue(where, message[len(prefix) :], at_key=item.key_error)
    found = error.get("input")
    expected = _EXPECTED.get(kind)
    if kind == "literal_error":
        expected = str(error.get("ctx", {}).get("expected", "")) or None
    if expected:
        return Issue(where, f"expected {expected}, found {shown(found)}", at_key=item.key_error)
    message = message[:1].lower() + message[1:]
    if not isinstance(found, dict | list):
        message = f"{message}, found {shown(found)}"
    return Issue(where, message, at_key=item.key_error)
