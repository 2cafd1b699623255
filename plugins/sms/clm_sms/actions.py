"""``sms.send``: render a text for the contact and hand it to the provider.

External (it runs after the dispatch transaction commits, outside the write lock). Outcomes:
``sms.sent`` (with the provider's id, the encoding and the segment count) and done; a
template that does not render, a missing or invalid number, a text over ``max_segments``, or
a provider's permanent refusal: ``sms.failed`` and failed at once; a provider's temporary
failure (429, 5xx, timeout): raised, and the engine retries with backoff.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from clm_engine import ActionContext, Name, utc_text

from . import rendering
from .encoding import non_gsm_characters, segments
from .numbers import NumberError, e164, masked
from .providers import OutgoingSms, PermanentSmsError, Provider, provider_for
from .settings import SmsSettings, resolve_settings


class SendParams(BaseModel):
    """``{"action": "sms.send", "with": {"body": "Hi {{ first_name }}, see you at 9:00",
    "category": "transactional"}}``."""

    model_config = ConfigDict(extra="forbid")

    #: The text, a template (the email templates' fields and filters).
    body: Annotated[str, Field(min_length=1, max_length=5000)]
    #: ``marketing`` needs ``consent.sms``; exempt categories (``transactional``) do not.
    category: Name = "marketing"
    #: Values for personal fields the contact lacks: ``{"first_name": "there"}``.
    fallbacks: dict[Name, Annotated[str, Field(max_length=500)]] = Field(default_factory=dict)
    #: Template data from whoever queued the message.
    data: dict[str, Any] = Field(default_factory=dict)
    #: Parts this message may take at most; the settings' ``max_segments`` when left out.
    max_segments: Annotated[int, Field(ge=1, le=10)] | None = None

    @classmethod
    def check_references(cls, params: SendParams, documents: dict[str, Any]) -> list[str]:
        return rendering.problems(params.body, params.fallbacks)


def number_of(ctx: ActionContext, settings: SmsSettings) -> str:
    """The contact's number in E.164 (``NumberError`` when missing or invalid)."""
    attributes = ctx.contact.attributes
    raw = attributes.get(settings.phone_attribute)
    if raw in (None, ""):
        raise NumberError(f"the contact has no '{settings.phone_attribute}' attribute")
    country = attributes.get("country")
    region = settings.default_region or (country if isinstance(country, str) else None)
    return e164(str(raw), region)


def send(
    ctx: ActionContext, params: SendParams, *, provider: Provider | None = None
) -> dict[str, Any]:
    """Render, measure, check and send (see the module docstring)."""
    settings = resolve_settings()
    log: dict[str, Any] = {"key": ctx.key, "category": params.category}
    try:
        to = number_of(ctx, settings)
    except NumberError as error:
        ctx.emit("sms.failed", {**log, "reason": str(error)})
        return {"failed": str(error)}
    log["to"] = masked(to)
    try:
        text = rendering.render_text(
            params.body,
            ctx.contact,
            fallbacks=params.fallbacks,
            data=params.data,
            event=ctx.event,
            limits=settings.template_limits,
        )
    except rendering.RenderError as error:
        ctx.emit("sms.failed", {**log, "reason": str(error)})
        return {"failed": str(error)}
    if not text:
        ctx.emit("sms.failed", {**log, "reason": "the body rendered empty"})
        return {"failed": "the body rendered empty"}
    parts = segments(text)
    allowed = params.max_segments or settings.max_segments
    log.update(segments=parts.count, encoding=parts.encoding, characters=len(text))
    if parts.count > allowed:
        hint = ""
        if parts.encoding == "UCS-2":
            odd = "".join(non_gsm_characters(text)[:10])
            hint = f" (UCS-2 because of {odd!r}; without them it would be GSM-7)"
        reason = f"{parts.count} segments of {parts.encoding}{hint}; at most {allowed}"
        ctx.emit("sms.failed", {**log, "reason": reason})
        return {"failed": reason}
    message = OutgoingSms(to, settings.sender, text, ctx.key, parts.count, parts.encoding)
    veto = ctx.veto_now()  # last, before the provider: a STOP since the claim counts
    if veto is not None:
        return {"vetoed": veto}
    try:
        message_id = (provider or provider_for(settings, ctx.registry)).send(message)
    except PermanentSmsError as error:
        ctx.emit("sms.failed", {**log, "reason": str(error)})
        return {"failed": str(error)}
    # TemporarySmsError (or any other) propagates: the engine retries with backoff.
    ctx.emit("sms.sent", {**log, "message_id": message_id, "sent_at": utc_text(ctx.now)})
    return {"sent": message_id, "to": log["to"], "segments": parts.count}


class _Simulated:
    def send(self, message: OutgoingSms) -> str:
        return "simulated: not sent"


def simulate_send(ctx: ActionContext, params: SendParams) -> dict[str, Any]:
    """``sms.send`` in a simulation or backtest: rendered, measured and counted, sent nowhere
    (caps count it, as they would live)."""
    return send(ctx, params, provider=_Simulated())
