"""The JSON body: a JSON value whose strings are templates, rendered in the email plugin's
bounded Jinja2 sandbox.

Why each string is a template, and not the JSON text as a whole: a value with a quote in it
(``O"Brien``) would break JSON text rendered as text, or inject keys into it. Rendering each
string leaf keeps the body's shape exactly as the ruleset wrote it; only string values change.

Why clm-email's sandbox: it is the engine's one hardened template environment (no attribute
walks, no file access, bounded in time, output size and loop iterations while it renders).
A second, weaker copy here would be the one an attacker picks. The budget covers the whole
body: the time and the output of all its strings together.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from clm_email.settings import TemplateLimits
from clm_email.templates import (
    EmailTemplate,
    RenderError,
    TemplateLimitError,
    check_template,
    context_for,
    render,
)

from clm_engine import Contact

NAME = "webhook-body"

__all__ = ["RenderError", "TemplateLimitError", "context", "problems", "render_body"]


def _leaves(value: Any, pointer: str = "") -> Iterator[tuple[str, str]]:
    """Every string of a JSON value (keys too) with its JSON pointer."""
    if isinstance(value, str):
        yield pointer, value
    elif isinstance(value, dict):
        for key, item in value.items():
            escaped = str(key).replace("~", "~0").replace("/", "~1")
            yield f"{pointer}/{escaped}#key", str(key)
            yield from _leaves(item, f"{pointer}/{escaped}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{pointer}/{index}")


def _template(source: str, fallbacks: dict[str, str]) -> EmailTemplate:
    return EmailTemplate(email_template=NAME, subject="-", text=source, fallbacks=fallbacks)


def context(
    contact: Contact, *, fallbacks: dict[str, str], data: dict[str, Any], event: Any
) -> dict[str, Any]:
    """What the templates see: the email templates' fields (``first_name``, ``email``,
    ``attributes``, ``data``, ``event`` ...) plus ``scores``, ``metrics`` and ``tags``."""
    values = context_for(
        contact, _template("", fallbacks), unsubscribe_url="", data=data, event=event
    )
    del values["unsubscribe_url"], values["sequence"], values["step"]
    values["scores"] = dict(contact.scores)
    values["metrics"] = {
        k: v for k, v in contact.metrics.items() if isinstance(v, str | int | float | bool)
    }
    values["tags"] = list(contact.tags)
    return values


def render_body(
    body: Any, values: dict[str, Any], fallbacks: dict[str, str], limits: TemplateLimits
) -> Any:
    """``body`` with every string rendered; ``RenderError`` naming the JSON pointer."""
    deadline = time.monotonic() + limits.max_seconds
    written = 0

    def one(pointer: str, source: str) -> str:
        nonlocal written
        if "{" not in source:  # no template syntax: the text is itself
            return source
        left = deadline - time.monotonic()
        if left <= 0:
            raise TemplateLimitError(
                f"body {pointer}: over the limit of {limits.max_seconds:g} s of rendering time"
            )
        budget = limits.model_copy(update={"max_seconds": left})
        try:
            text = render(_template(source, fallbacks), values, budget).text
        except RenderError as error:
            reason = str(error).split(", text: ", 1)[-1]
            raise type(error)(f"body {pointer or '/'}: {reason}") from None
        written += len(text)
        if written > limits.max_output:
            raise TemplateLimitError(
                f"body {pointer}: over the limit of {limits.max_output:,} characters of output"
            )
        return text

    def walk(value: Any, pointer: str) -> Any:
        if isinstance(value, str):
            return one(pointer, value)
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                escaped = str(key).replace("~", "~0").replace("/", "~1")
                out[one(f"{pointer}/{escaped}", str(key))] = walk(item, f"{pointer}/{escaped}")
            return out
        if isinstance(value, list):
            return [walk(item, f"{pointer}/{index}") for index, item in enumerate(value)]
        return value

    return walk(body, "")


def problems(body: Any, fallbacks: dict[str, str]) -> list[str]:
    """Template problems of a body, each naming its JSON pointer (checked at validation)."""
    found = []
    for pointer, source in _leaves(body):
        if "{" not in source:
            continue
        for _, message in check_template(_template(source, fallbacks)):
            where = pointer.replace("#key", " (a key)") or "/"
            message = message.replace(f"template {NAME!r}, text: ", "")
            found.append(f"body {where}: {message}")
    return found
