"""Which ``data`` keys a template needs, and whether whoever sends it can ever supply them.

``{{ data.cart_url }}`` renders only if the rule (``email.send``'s ``with.data``) or the drip
step (a step's ``data``) that sends the template passes ``cart_url``; otherwise every send
fails at render time. That is knowable before anything runs: the template's syntax tree (a
walk of jinja2's AST, the same parser that renders it) says which keys it reads, and the rule
or step says which it passes. Reads that guard themselves are not needs: ``data.x |
default(...)``, ``data.get('x')``, ``data.x is defined``, and anything inside ``{% if data.x %}``
(or an ``... if data.x else ...``). A template sent only by other plugins' follow-ups (which
pass their own data) has no static sender and so nothing to check.
"""

from __future__ import annotations

from collections.abc import Iterator

from jinja2 import nodes

#: Filters that give a missing value a default: what they wrap is not a need.
_DEFAULTS = frozenset({"default", "d"})
#: Attributes of ``data`` that are methods of the mapping, not keys.
_METHODS = frozenset({"get", "items", "keys", "values"})


def needed_keys(parsed: list[tuple[str, nodes.Template]]) -> dict[str, str]:
    """``{key: part}`` for every ``data`` key the template reads unguarded, with the first part
    (``subject``, ``text``, ``html``) that reads it. ``parsed`` is each part's syntax tree."""
    found: dict[str, str] = {}
    for part, tree in parsed:
        for key in _unguarded(tree, frozenset()):
            found.setdefault(key, part)
    return found


def missing_message(template: str, key: str, part: str, passed: list[str]) -> str:
    """What the warning says: which key, where it is read, what the sender passes instead."""
    has = f"it passes {', '.join(sorted(passed))}" if passed else "it passes no data"
    return (
        f"template {template!r} reads data.{key} (in its {part}), which is never set here "
        f'({has}): every send will fail to render. Pass "data": {{"{key}": ...}}, or give '
        f"it a default in the template ({{{{ data.{key} | default('...') }}}})"
    )


def _unguarded(node: nodes.Node, guarded: frozenset[str]) -> Iterator[str]:
    if isinstance(node, nodes.Filter) and node.name in _DEFAULTS:
        for child in node.iter_child_nodes(exclude=("node",)):
            yield from _unguarded(child, guarded)
        return
    if isinstance(node, nodes.Test):
        return  # ``data.x is defined``: asking is not needing
    if isinstance(node, nodes.If | nodes.CondExpr):
        inner = guarded | set(_keys_in(node.test))
        yield from _unguarded(node.test, inner)
        for child in node.iter_child_nodes(exclude=("test",)):
            yield from _unguarded(child, inner)
        return
    key = _data_key(node)
    if key is not None:
        if key not in guarded:
            yield key
        return
    for child in node.iter_child_nodes():
        yield from _unguarded(child, guarded)


def _keys_in(node: nodes.Node) -> Iterator[str]:
    """Every ``data`` key an expression reads (a test that mentions it guards it)."""
    for found in [node, *node.find_all((nodes.Getattr, nodes.Getitem))]:
        key = _data_key(found)
        if key is not None:
            yield key


def _data_key(node: nodes.Node) -> str | None:
    """``x`` if ``node`` is ``data.x`` or ``data['x']``, else None."""
    if isinstance(node, nodes.Getattr) and _is_data(node.node) and node.attr not in _METHODS:
        return str(node.attr)
    if (
        isinstance(node, nodes.Getitem)
        and _is_data(node.node)
        and isinstance(node.arg, nodes.Const)
        and isinstance(node.arg.value, str)
    ):
        return node.arg.value
    return None


def _is_data(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "data" and node.ctx == "load"
