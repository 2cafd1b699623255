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

import functools
import hashlib
import hmac
import inspect
import re
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from string import Formatter
from typing import Annotated, Any
from urllib.parse import urlencode

from jinja2 import (
    StrictUndefined,
    Template,
    TemplateError,
    TemplateSyntaxError,
    UndefinedError,
    nodes,
)
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from pydantic import BaseModel, ConfigDict, Field, field_validator

from clm_engine import Contact, Name, closest

from .settings import TemplateLimits, resolve_settings
from .template_data import missing_message, needed_keys

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
MESSAGE_FIELDS = (
    "unsubscribe_url",
    "contact_id",
    "attributes",
    "data",
    "event",
    "sequence",
    "step",
)

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


# -- bounds: time, output and loops, enforced while rendering -------------------------------------


class TemplateLimitError(RenderError):
    """A template went over one of the ``template_limits``; the message names the template,
    the part and the limit (a permanent failure: rendering it again would go over again)."""


class _OverLimit(Exception):
    """Raised inside rendering; ``render`` turns it into a ``TemplateLimitError``. Not a
    ``TypeError`` or ``ValueError``, which Jinja2 catches in places."""


_LIMIT_TEXT = {
    "max_seconds": "{:g} s of rendering time",
    "max_output": "{:,} characters of output",
    "max_loop_iterations": "{:,} loop iterations",
}
#: An integer a template computes may have at most this many bits (about 4,300 digits:
#: Python will not even write a longer one out).
_MAX_INT_BITS = 14_300
#: ``tojson(indent=...)``: more than this multiplies the output by the nesting depth.
_MAX_JSON_INDENT = 16


class _Budget:
    """What one message's rendering has left: a deadline, characters, loop iterations."""

    def __init__(self, limits: TemplateLimits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.max_seconds
        self.iterations = 0
        self.written = 0

    def over(self, setting: str, what: str = "") -> _OverLimit:
        limit = _LIMIT_TEXT[setting].format(getattr(self.limits, setting))
        lead = f"{what}: " if what else ""
        return _OverLimit(f"{lead}over the limit of {limit} (template_limits.{setting})")

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise self.over("max_seconds")

    def size(self, n: int, what: str) -> None:
        """Refuse to build a value of ``n`` characters (or items) before it is built."""
        if n > self.limits.max_output:
            raise self.over("max_output", f"{what} would make {n:,} characters")

    def write(self, n: int) -> None:
        self.written += n
        if self.written > self.limits.max_output:
            raise self.over("max_output")
        self.tick()

    def iterate(self) -> None:
        self.iterations += 1
        if self.iterations > self.limits.max_loop_iterations:
            raise self.over("max_loop_iterations")
        self.tick()


_BUDGET: ContextVar[_Budget | None] = ContextVar("clm_email_template_budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:  # compiling: Jinja2 then leaves the expression to be run when rendering
        raise _OverLimit("only while rendering")
    return budget


def _weight(value: Any, limit: int) -> int:
    """About how many characters ``value`` makes as text, counting no further than ``limit``
    (a list nested in itself ten times over is small in memory and enormous as text)."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, list | tuple | set | frozenset | dict):
            total += len(item) + 2
            if total <= limit:
                stack.extend(item)
                if isinstance(item, dict):
                    stack.extend(item.values())
        elif isinstance(item, Namespace):
            stack.append(dict(item._Namespace__attrs))  # its own attributes, by their mangled name
        else:
            total += 1
        if total > limit:
            break
    return total


def _check_weight(budget: _Budget, values: Any, what: str) -> None:
    limit = budget.limits.max_output
    for value in values:
        budget.size(_weight(value, limit), what)


_PERCENT = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[a-zA-Z%]")


def _check_percent(budget: _Budget, fmt: str | bytes, values: Any) -> None:
    """``'%10s' % x`` and the ``format`` filter: widths within bounds, output estimated."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    fields = 0
    for match in _PERCENT.finditer(text):
        fields += 1
        for number in match.groups():
            if number == "*":
                raise budget.over("max_output", "a width taken from the values ('%*s')")
            if number and int(number) > budget.limits.max_output:
                budget.size(int(number), "a '%' width")
    heaviest = _weight(values, budget.limits.max_output)
    budget.size(len(text) + fields * heaviest, "'%' formatting")


def _check_format(budget: _Budget, fmt: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """``'{:>10}'.format(x)``: widths within bounds, output estimated."""
    fields = 0
    try:
        parsed = list(Formatter().parse(fmt))
    except ValueError:
        return  # str.format will say what is wrong
    for _literal, name, spec, _conversion in parsed:
        if name is None:
            continue
        fields += 1
        if spec and "{" in spec:
            raise budget.over("max_output", "a width taken from the values ('{:{}}')")
        for number in re.findall(r"\d+", spec or ""):
            budget.size(int(number), "a format width")
    heaviest = max(
        (_weight(v, budget.limits.max_output) for v in (*args, *kwargs.values())), default=0
    )
    budget.size(len(fmt) + fields * heaviest, "format()")


def _check_str_method(budget: _Budget, text: str | bytes, name: str, args: tuple[Any, ...]) -> None:
    """Methods of a string whose result can be far larger than the string."""
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        budget.size(args[0], f".{name}()")
    elif name == "expandtabs":
        tab = args[0] if args and isinstance(args[0], int) else 8
        tabs = text.count("\t") if isinstance(text, str) else text.count(b"\t")
        budget.size(len(text) + tabs * max(tab, 0), ".expandtabs()")
    elif name == "replace" and len(args) >= 2:
        budget.size(_replaced_size(text, *args[:3]), ".replace()")
    elif name == "translate":
        table = args[0] if args else None
        longest = (
            max((_weight(v, budget.limits.max_output) for v in table.values()), default=1)
            if isinstance(table, dict)
            else 1
        )
        budget.size(len(text) * max(longest, 1), ".translate()")
    elif name == "join" and args:
        budget.size(_joined_size(budget, text, args[0])[1], ".join()")


def _replaced_size(text: Any, old: Any, new: Any, count: Any = -1) -> int:
    if not isinstance(text, str | bytes) or not isinstance(new, str | bytes):
        return 0
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * len(new)


def _joined_size(budget: _Budget, separator: Any, items: Any) -> tuple[list[Any], int]:
    """The items of a join, taken one at a time (they may be a generator), and its size."""
    limit = budget.limits.max_output
    taken: list[Any] = []
    total = 0
    step = len(separator) if isinstance(separator, str | bytes) else 1
    for item in items:
        taken.append(item)
        total += _weight(item, limit) + step
        if total > limit:
            break
    return taken, total


def _bounded_range(*args: int) -> range:
    budget = _budget()
    numbers = range(*args)
    if len(numbers) > budget.limits.max_loop_iterations:
        raise budget.over("max_loop_iterations", f"range() of {len(numbers):,} numbers")
    return numbers


class _Counted:
    """A loop's iterable, counting each iteration against the budget (and the clock)."""

    def __init__(self, iterable: Any, budget: _Budget) -> None:
        self._iterable = iterable
        self._budget = budget

    def __len__(self) -> int:
        return len(self._iterable)  # a TypeError: the loop counts the items itself

    def __iter__(self) -> Iterator[Any]:
        budget = self._budget
        for item in self._iterable:
            budget.iterate()
            yield item


class _Buffer(list[str]):
    """What a macro, a ``{% set %}`` block or a ``{% filter %}`` block writes: counted."""

    def append(self, item: Any) -> None:
        _budget().write(len(item))
        super().append(item)

    def extend(self, items: Any) -> None:
        items = tuple(items)
        _budget().write(sum(len(item) for item in items))
        super().extend(items)


class _CodeGenerator(CodeGenerator):
    """Jinja2's compiler with every capture buffer counted and every ``~`` bounded."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.clm_buffer()")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.clm_concat(")
        super().visit_Concat(node, frame)
        self.write(")")


def _size_args(*names: str) -> Callable[[_Budget, dict[str, Any]], None]:
    def check(budget: _Budget, arguments: dict[str, Any]) -> None:
        for name in names:
            value = arguments.get(name)
            if isinstance(value, int):
                budget.size(value, name)

    return check


def _check_indent(budget: _Budget, a: dict[str, Any]) -> None:
    width = a.get("width")
    per_line = width if isinstance(width, int) else len(str(width))
    budget.size(per_line, "indent width")
    text = str(a.get("s", ""))
    budget.size(len(text) + (text.count("\n") + 1) * per_line, "indent")


def _check_wordwrap(budget: _Budget, a: dict[str, Any]) -> None:
    text, width = str(a.get("s", "")), a.get("width")
    wrap = a.get("wrapstring") or "\n"
    lines = len(text) // max(width if isinstance(width, int) else 1, 1) + text.count("\n") + 1
    budget.size(len(text) + lines * len(str(wrap)), "wordwrap")


def _check_tojson(budget: _Budget, a: dict[str, Any]) -> None:
    indent = a.get("indent")
    if isinstance(indent, int) and indent > _MAX_JSON_INDENT:
        raise budget.over("max_output", f"tojson indent {indent:,} (at most {_MAX_JSON_INDENT})")


def _check_replace(budget: _Budget, a: dict[str, Any]) -> None:
    count = a.get("count")
    size = _replaced_size(a.get("s"), a.get("old"), a.get("new"), -1 if count is None else count)
    budget.size(size, "replace")


def _check_join(budget: _Budget, a: dict[str, Any]) -> None:
    items, size = _joined_size(budget, a.get("d", ""), a.get("value", ()))
    budget.size(size, "join")
    a["value"] = items  # a generator was consumed: join what was taken


def _check_format_filter(budget: _Budget, a: dict[str, Any]) -> None:
    _check_percent(budget, str(a.get("value", "")), (a.get("args"), a.get("kwargs")))


#: Filters whose result can be far larger than what they are given: checked beforehand.
_FILTER_CHECKS: dict[str, Callable[[_Budget, dict[str, Any]], None]] = {
    "center": _size_args("width"),
    "batch": _size_args("linecount"),
    "slice": _size_args("slices"),
    "indent": _check_indent,
    "wordwrap": _check_wordwrap,
    "tojson": _check_tojson,
    "replace": _check_replace,
    "join": _check_join,
    "format": _check_format_filter,
}


_PASSED = ("eval_ctx", "context", "environment", "env")


def _guarded_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)
    check = _FILTER_CHECKS.get(name)
    # A filter Jinja2 made async-capable is handed the evaluation context its signature lacks.
    passed = getattr(original, "jinja_pass_arg", None) is not None
    lead = 1 if passed and next(iter(signature.parameters)) not in _PASSED else 0

    @functools.wraps(original)  # keeps Jinja2's pass_context / pass_eval_context mark
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        _check_weight(budget, (*args, *kwargs.values()), f"the {name} filter")
        if check is not None:
            bound = signature.bind(*args[lead:], **kwargs)
            bound.apply_defaults()
            check(budget, bound.arguments)
            args, kwargs = (*args[:lead], *bound.args), bound.kwargs
        result = original(*args, **kwargs)
        if isinstance(result, str | bytes | list | tuple):
            budget.size(len(result), f"the {name} filter")
        return result

    return guarded


def _finalize(value: Any) -> Any:
    """Every ``{{ expression }}`` passes here before it is made text."""
    budget = _BUDGET.get()
    if budget is not None and not isinstance(value, str):
        budget.size(_weight(value, budget.limits.max_output), "writing a value")
    return value


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with the time, output and loop limits enforced as the template runs:
    repetition, powers, joins, paddings and formatting are sized before they are built, every
    loop iteration and call is counted against the clock, ``lipsum`` is gone."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset(["*", "**", "+", "%"])

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_finalize, **options)
        self.globals.pop("lipsum", None)
        self.globals["range"] = _bounded_range
        self.filters = {name: _guarded_filter(name, f) for name, f in self.filters.items()}
        self.clm_buffer = _Buffer

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):  # every loop counts its iterations
            counted = nodes.EnvironmentAttribute("clm_counted", lineno=loop.lineno)
            loop.iter = nodes.Call(counted, [loop.iter], [], None, None, lineno=loop.lineno)
        return tree

    def clm_counted(self, iterable: Any) -> _Counted:
        return _Counted(iterable, _budget())

    def clm_concat(self, joined: str) -> str:
        _budget().size(len(joined), "'~'")
        return joined

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.tick()
        numbers = isinstance(left, int) and isinstance(right, int)
        if operator == "*" and numbers:
            if left.bit_length() + right.bit_length() > _MAX_INT_BITS:
                raise budget.over("max_output", "'*' would make a number over 4,300 digits")
        elif operator == "*":
            sequence, times = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(sequence, str | bytes | list | tuple) and isinstance(times, int):
                weight = _weight(sequence, budget.limits.max_output)
                budget.size(len(sequence) * times, "'*'")
                budget.size(weight * times, "'*'")
        elif operator == "**" and numbers:
            if right > 0 and abs(left) > 1 and right * left.bit_length() > _MAX_INT_BITS:
                raise budget.over("max_output", "'**' would make a number over 4,300 digits")
        elif operator == "+" and isinstance(left, str | bytes | list | tuple):
            limit = budget.limits.max_output
            budget.size(_weight(left, limit) + _weight(right, limit), "'+'")
        elif operator == "%" and isinstance(left, str | bytes):
            _check_percent(budget, left, right)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        def bounded(*args: Any, **kwargs: Any) -> str:
            budget = _budget()
            if value.__name__ == "format_map":
                _check_format(
                    budget, fmt, (), dict(args[0]) if args and isinstance(args[0], dict) else {}
                )
            else:
                _check_format(budget, fmt, args, kwargs)
            return wrapped(*args, **kwargs)

        return bounded

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        if isinstance(__obj, LoopContext) and args:  # a recursive loop's next level
            args = (_Counted(args[0], budget), *args[1:])
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str | bytes):
            _check_str_method(budget, owner, getattr(__obj, "__name__", ""), args)
        elif isinstance(owner, int) and getattr(__obj, "__name__", "") == "to_bytes":
            _check_weight(budget, (*args, *kwargs.values()), ".to_bytes()")
            if args and isinstance(args[0], int):
                budget.size(args[0], ".to_bytes()")
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, str | bytes | list | tuple):
            budget.size(len(result), "a call")
        return result


def _environment(autoescape: bool) -> _BoundedEnvironment:
    return _BoundedEnvironment(
        loader=None,  # include / extends / import find nothing: no file is ever read
        autoescape=autoescape,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        auto_reload=False,
    )


_TEXT_ENV = _environment(False)
_HTML_ENV = _environment(True)


def _limits() -> TemplateLimits:
    """The limits in force: the email settings', or the defaults when those are unusable
    (sending then fails on the settings themselves, with their own message)."""
    try:
        return resolve_settings().template_limits
    except ValueError:
        return TemplateLimits()


@lru_cache(maxsize=512)
def _compiled(part: str, source: str) -> Template:
    """Compile once per distinct source: rendering 10,000 messages compiles each part once."""
    return (_HTML_ENV if part == "html" else _TEXT_ENV).from_string(source)


def _parts(template: EmailTemplate) -> list[tuple[str, str]]:
    parts = [("subject", template.subject), ("text", template.text_source)]
    if template.html_source is not None:
        parts.append(("html", template.html_source))
    return parts


def data_needs(template: EmailTemplate) -> dict[str, str]:
    """The ``data`` keys the template reads with no default, each with the part that reads
    it (``template_data``); none for a template that does not parse (that is an error)."""
    try:
        parsed = [(part, _TEXT_ENV.parse(source)) for part, source in _parts(template)]
    except TemplateSyntaxError:
        return {}
    return needed_keys(parsed)


def missing_data(template: EmailTemplate | None, name: str, passed: dict[str, Any]) -> list[str]:
    """Warnings for a sender (a rule's ``email.send``, a drip step) of ``template`` that passes
    ``passed`` as its data: one per key the template needs that it does not pass."""
    if template is None:
        return []  # an unknown template is an error reported elsewhere
    return [
        missing_message(name, key, part, list(passed))
        for key, part in sorted(data_needs(template).items())
        if key not in passed
    ]


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
    event: Any = None,
) -> dict[str, Any]:
    """What a template sees for this contact: plain values, fallbacks for missing ones.

    ``event`` is the event that triggered the rule (``{{ event.properties.cart_url }}``), when
    the message comes from an event or stage-change rule; else ``event`` is empty."""
    fields = contact.__dict__
    context: dict[str, Any] = {
        "contact_id": contact.id,
        "attributes": _plain(contact.attributes),
        "data": _plain(data or {}),
        "event": _plain(
            {
                "type": event.type,
                "occurred_at": event.occurred_at.isoformat(),
                "properties": event.properties,
            }
            if event is not None
            else {}
        ),
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


def render(
    template: EmailTemplate, context: dict[str, Any], limits: TemplateLimits | None = None
) -> Rendered:
    """Render every part; ``RenderError`` names the template, the part and the reason, and
    ``TemplateLimitError`` (one) the limit a part went over. ``limits`` are the email
    settings' ``template_limits`` unless given; they bound the whole message."""
    budget = _Budget(limits or _limits())
    out: dict[str, str] = {}
    token = _BUDGET.set(budget)
    part = "subject"
    try:
        for part, source in _parts(template):
            pieces = []
            for piece in _compiled(part, source).generate(context):
                budget.write(len(piece))
                pieces.append(piece)
            out[part] = "".join(pieces)
    except (_OverLimit, RecursionError, MemoryError) as error:
        reason = str(error) if isinstance(error, _OverLimit) else _TOO_DEEP
        raise TemplateLimitError(
            f"template {template.email_template!r}, {part}: {reason}"
        ) from None
    except (TemplateError, SecurityError, TypeError, ValueError, ArithmeticError) as error:
        raise RenderError(
            f"template {template.email_template!r}, {part}: {_describe(error)}"
        ) from None
    finally:
        _BUDGET.reset(token)
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


_TOO_DEEP = "macros call themselves too deeply (a macro that never stops calling itself?)"
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


class _SampleData(dict[str, Any]):
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
        context["event"] = {"type": "sample", "occurred_at": "", "properties": _SampleData()}
        try:
            render(template, context)
        except RenderError as error:
            part = str(error).split(", ", 1)[-1].split(":", 1)[0]
            pointer = f"/{part}" if part in ("subject", "text", "html") else ""
            problems.append((pointer, f"does not render for {label}: {error}"))
            break
    return problems
