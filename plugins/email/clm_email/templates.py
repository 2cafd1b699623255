"""Email templates: Jinja2 in a sandbox, with a subject, a text part and an optional HTML part.

Ops teams write templates, so rendering must not be a way into the engine: templates run in
Jinja2's ``ImmutableSandboxedEnvironment`` (no ``__class__``-style attribute walks, no mutating
calls), have no loader (``include``, ``extends`` and ``import`` reach no file), and see only
plain values copied from the contact (strings, numbers, a dict of attributes), never the
engine's objects.

Missing values: the context holds a personal field (``first_name``, ``company``, ``plan``,
``product`` ...) only when the contact has it, else the template's ``fallbacks`` value. An
undefined name is an error (``StrictUndefined``), so ``{{ frist_name }}`` is caught when the
template is validated, and ``{{ company }}`` without a fallback is reported then too (it is
rendered once for a contact that has every field and once for one that has none). At send
time a render error is a recorded failure, never a half-sent email.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any
from urllib.parse import urlencode

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from clm_engine import Contact, Name, closest

#: The document kind (and key) of templates.
KIND = "email_template"

#: Personal fields a template may use: where each comes from on the contact.
PERSONAL_FIELDS: dict[str, tuple[str, ...]] = {
    "first_name": ("attributes", "first_name"),
    "last_name": ("attributes", "last_name"),
    "company": ("attributes", "company"),
    "plan": ("attributes", "plan"),
    "product": ("attributes", "product"),  # else the last product bought (metrics.last_product)
    "country": ("attributes", "country"),
    "email": ("email",),
    "timezone": ("timezone",),
    "stage": ("stage",),
}
#: Always there: the message's own values.
MESSAGE_FIELDS = ("unsubscribe_url", "contact_id", "attributes", "data", "sequence", "step")

Text = Annotated[str, Field(max_length=200_000)]


class EmailTemplate(BaseModel):
    """A template document: ``{"email_template": "welcome", "subject": ..., "text": ...}``.

    ``text`` and ``html`` are a string or a list of lines (joined with newlines), so a long
    body stays readable in JSON.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str | None = Field(default=None, alias="$schema")
    email_template: Name
    description: str = ""
    subject: Annotated[str, Field(min_length=1, max_length=500)]
    text: Text | list[Text]
    html: Text | list[Text] | None = None
    #: Values used when the contact lacks a field: ``{"first_name": "there"}``.
    fallbacks: dict[Name, str] = Field(default_factory=dict)

    @field_validator("fallbacks")
    @classmethod
    def _known(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name not in PERSONAL_FIELDS:
                raise ValueError(f"no personal field {name!r}; known: {', '.join(PERSONAL_FIELDS)}")
        return value

    @property
    def text_source(self) -> str:
        return "\n".join(self.text) if isinstance(self.text, list) else self.text

    @property
    def html_source(self) -> str | None:
        return "\n".join(self.html) if isinstance(self.html, list) else self.html


@dataclass(frozen=True)
class Rendered:
    """A rendered message's parts."""

    subject: str
    text: str
    html: str | None


class RenderError(ValueError):
    """A template that cannot be rendered for this contact; the message says which part and why."""


def _environment(autoescape: bool) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        loader=None,  # include / extends / import find nothing: no file is ever read
        autoescape=autoescape,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        auto_reload=False,
    )


_TEXT_ENV = _environment(False)
_HTML_ENV = _environment(True)


@lru_cache(maxsize=512)
def _compiled(part: str, source: str):
    """Compile once per distinct source: rendering 10,000 messages compiles each part once."""
    return (_HTML_ENV if part == "html" else _TEXT_ENV).from_string(source)


def _parts(template: EmailTemplate) -> list[tuple[str, str]]:
    parts = [("subject", template.subject), ("text", template.text_source)]
    if template.html_source is not None:
        parts.append(("html", template.html_source))
    return parts


def unsubscribe_token(contact_id: str, secret: bytes) -> str:
    """The token that proves an unsubscribe link was made for this contact (HMAC-SHA256).

    Your unsubscribe endpoint checks it with :func:`verify_unsubscribe_token` before it
    ingests an ``unsubscribed`` event, so nobody can unsubscribe someone else by guessing ids.
    """
    return hmac.new(secret, contact_id.encode(), hashlib.sha256).hexdigest()[:32]


def verify_unsubscribe_token(contact_id: str, token: str, secret: bytes) -> bool:
    return hmac.compare_digest(unsubscribe_token(contact_id, secret), token)


def unsubscribe_link(base: str, contact_id: str, secret: bytes) -> str:
    query = urlencode({"contact": contact_id, "token": unsubscribe_token(contact_id, secret)})
    return f"{base}{'&' if '?' in base else '?'}{query}"


def _plain(value: Any) -> Any:
    """Only JSON-like values reach a template: nothing with methods of the engine's own."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def context_for(
    contact: Contact,
    template: EmailTemplate,
    *,
    unsubscribe_url: str,
    sequence: str | None = None,
    step: str | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a template sees for this contact: plain values, fallbacks for missing ones."""
    fields = contact.__dict__
    context: dict[str, Any] = {
        "contact_id": contact.id,
        "attributes": _plain(contact.attributes),
        "data": _plain(data or {}),
        "unsubscribe_url": unsubscribe_url,
        "sequence": sequence,
        "step": step,
    }
    for name, path in PERSONAL_FIELDS.items():
        value = fields[path[0]]
        if len(path) > 1:
            value = value.get(path[1])
        if name == "product" and value in (None, ""):
            value = contact.metrics.get("last_product")
        if value in (None, ""):
            value = template.fallbacks.get(name)
        if value is not None:
            context[name] = _plain(value)
    return context


def render(template: EmailTemplate, context: dict[str, Any]) -> Rendered:
    """Render every part; ``RenderError`` names the template, the part and the reason."""
    out: dict[str, str] = {}
    for part, source in _parts(template):
        try:
            out[part] = _compiled(part, source).render(context)
        except (TemplateError, SecurityError, TypeError, ValueError, ArithmeticError) as error:
            raise RenderError(
                f"template {template.email_template!r}, {part}: {_describe(error)}"
            ) from None
    subject = " ".join(out["subject"].split())  # one line: a newline would forge a header
    if not subject:
        raise RenderError(f"template {template.email_template!r}: the subject rendered empty")
    text, html = out["text"], out.get("html")
    url = context.get("unsubscribe_url")
    if url and url not in text:  # every message carries the link, whatever the template says
        text = text.rstrip("\n") + f"\n\n--\nUnsubscribe: {url}\n"
    if html is not None and url and _html_url(url) not in html:
        footer = f'<p style="font-size:12px"><a href="{_html_url(url)}">Unsubscribe</a></p>'
        at = html.lower().rfind("</body>")
        html = html + footer if at < 0 else html[:at] + footer + html[at:]
    return Rendered(subject, text, html)


def _html_url(url: str) -> str:
    from markupsafe import escape

    return str(escape(url))


_FILE_TAGS = (nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)
_NO_FILES = (
    "include, extends and import are not available: a template is one document and reads no file"
)


def _describe(error: Exception) -> str:
    if isinstance(error, TypeError) and "no loader" in str(error):
        return _NO_FILES
    if isinstance(error, TemplateSyntaxError):
        return f"line {error.lineno}: {error.message}"
    if isinstance(error, UndefinedError):
        message = str(error.message or error)
        name = message.split("'")[1] if message.count("'") >= 2 else ""
        known = [*PERSONAL_FIELDS, *MESSAGE_FIELDS]
        if name in PERSONAL_FIELDS:
            return (
                f"{message}: the contact has no {name}; give the template a fallback "
                f'("fallbacks": {{"{name}": "..."}}) or write {{{{ {name} | default("...") }}}}'
            )
        close = closest(name, known) if name else None
        hint = f"; did you mean {close!r}?" if close else f"; known: {', '.join(known)}"
        return message + hint
    if isinstance(error, SecurityError):
        return f"not allowed in a template: {error}"
    return f"{type(error).__name__}: {error}"


# -- validation: what can be known before anything is sent ---------------------------------------

_FULL = Contact(
    id="sample-contact",
    email="ada@example.com",
    stage="awareness",
    timezone="Europe/London",
    attributes={
        "first_name": "Ada",
        "last_name": "Lovelace",
        "company": "Analytical Engines Ltd",
        "plan": "pro",
        "product": "Difference Engine",
        "country": "GB",
    },
)
_EMPTY = Contact(id="sample-contact")


class _SampleData(dict):
    """``data`` while validating: whoever queues the message supplies it, so any key a
    template reads is taken to be there (a missing one is a recorded failure at send time)."""

    def __missing__(self, key: str) -> str:
        return f"sample {key}"


def check_template(template: EmailTemplate) -> list[tuple[str, str]]:
    """Problems as ``(json pointer, message)``: syntax errors, unknown names, sandbox refusals,
    and personal fields used without a fallback (rendered for a contact that has none)."""
    problems: list[tuple[str, str]] = []
    for part, source in _parts(template):
        pointer = f"/{part}"
        try:
            _compiled(part, source)
        except TemplateSyntaxError as error:
            problems.append((pointer, f"template syntax error: {_describe(error)}"))
            continue
        if any(True for _ in _TEXT_ENV.parse(source).find_all(_FILE_TAGS)):
            problems.append((pointer, _NO_FILES))
    if problems:
        return problems
    for sample, label in ((_FULL, "a contact with every field"), (_EMPTY, "a contact with none")):
        context = context_for(sample, template, unsubscribe_url="https://example.com/u")
        context["data"] = _SampleData()
        try:
            render(template, context)
        except RenderError as error:
            part = str(error).split(", ", 1)[-1].split(":", 1)[0]
            pointer = f"/{part}" if part in ("subject", "text", "html") else ""
            problems.append((pointer, f"does not render for {label}: {error}"))
            break
    return problems
