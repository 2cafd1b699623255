"""The message text: a template rendered in the email plugin's bounded Jinja2 sandbox.

Why clm-email's sandbox: it is the engine's one hardened template environment (no attribute
walks, no file access, bounded in time, output and loop iterations while it renders), and an
SMS template sees the same fields an email template does (``first_name``, ``attributes``,
``event``, ``data`` ...), with the same ``fallbacks`` for missing ones.
"""

from __future__ import annotations

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

NAME = "sms-body"

__all__ = ["RenderError", "TemplateLimitError", "problems", "render_text"]


def _template(source: str, fallbacks: dict[str, str]) -> EmailTemplate:
    return EmailTemplate(email_template=NAME, subject="-", text=source, fallbacks=fallbacks)


def render_text(
    source: str,
    contact: Contact,
    *,
    fallbacks: dict[str, str],
    data: dict[str, Any],
    event: Any,
    limits: TemplateLimits,
) -> str:
    """The text for ``contact``; ``RenderError`` says why not. Whitespace at the ends is
    trimmed (a trailing newline would cost a character, maybe a segment)."""
    template = _template(source, fallbacks)
    values = context_for(contact, template, unsubscribe_url="", data=data, event=event)
    try:
        return render(template, values, limits).text.strip()
    except RenderError as error:
        reason = str(error).replace(f"template {NAME!r}, text: ", "")
        raise type(error)(f"body: {reason}") from None


def problems(source: str, fallbacks: dict[str, str]) -> list[str]:
    """Template problems of a body (checked when rulesets are validated)."""
    return [
        "body: " + message.replace(f"template {NAME!r}, text: ", "")
        for _, message in check_template(_template(source, fallbacks))
    ]
