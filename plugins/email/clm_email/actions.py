"""The actions: ``email.send`` (external) and the drip-sequence actions (internal).

``email.send`` renders and delivers outside the engine's write lock (an SMTP round trip never
blocks other writers) and reports what happened as events, which the plugin's handlers log:
``email.sent``; ``email.failed`` (a template that did not render: nothing was sent);
``email.bounced`` of type ``hard`` (a permanent 5xx refusal: the address is suppressed). A
temporary failure raises, and the engine retries with backoff.

The sequence actions run inside the dispatch transaction, so an enrollment, its next step and
its message are recorded exactly once however often a worker retries.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from clm_engine import ActionContext, Name, utc_text

from . import sequences, store, templates
from .message import build_message, message_id
from .sequences import Sequence, next_time
from .settings import check_address, resolve_settings, unsubscribe_secret
from .transports import PermanentDeliveryError, Transport, transport_for


def _documents(ctx: Any) -> dict[str, dict[str, Any]]:
    return getattr(ctx, "documents", None) or {}


def _missing(kind: str, name: str, known: dict[str, Any]) -> list[str]:
    if name in known:
        return []
    return [sequences.unknown_name(kind, name, known)]


# -- email.send --------------------------------------------------------------------------------


class SendParams(BaseModel):
    """``{"action": "email.send", "with": {"template": "receipt", "category": "transactional"}}``.

    ``data`` is template data from whoever queued the message (another plugin's follow-up:
    a warranty offer's product and price), shown to the template as ``{{ data.name }}``.
    ``sequence``, ``step`` and ``enrollment`` are set by drip sequences; a rule leaves them out.
    """

    model_config = ConfigDict(extra="forbid")

    template: Name
    category: Name = "marketing"
    reply_to: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    sequence: Name | None = None
    step: Name | None = None
    enrollment: str | None = None

    @field_validator("reply_to")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return None if value is None else check_address(value)

    @classmethod
    def check_references(cls, params: SendParams, documents: dict[str, Any]) -> list[str]:
        return _missing("template", params.template, documents.get(templates.KIND, {}))

    @classmethod
    def warn_references(cls, params: SendParams, documents: dict[str, Any]) -> list[str]:
        """A ``data`` key the template needs and this action never passes (see
        ``template_data``): valid, but every send would fail to render."""
        template = documents.get(templates.KIND, {}).get(params.template)
        return templates.missing_data(template, params.template, params.data)


def send(ctx: Any, params: SendParams, *, transport: Transport | None = None) -> dict[str, Any]:
    """Render ``params.template`` for the contact and deliver it through the transport."""
    documents = _documents(ctx)
    settings = resolve_settings()
    contact = ctx.contact
    log = {
        "key": ctx.key,
        "template": params.template,
        "category": params.category,
        "sequence": params.sequence,
        "step": params.step,
    }
    template = documents.get(templates.KIND, {}).get(params.template)
    if template is None:
        reason = f"no template {params.template!r} is loaded"
        ctx.emit("email.failed", {**log, "reason": reason})
        return {"failed": reason}
    if not contact.email:
        return {"skipped": "the contact has no email address"}
    link = templates.unsubscribe_link(settings.unsubscribe_url, contact.id, unsubscribe_secret())
    context = templates.context_for(
        contact,
        template,
        unsubscribe_url=link,
        sequence=params.sequence,
        step=params.step,
        data=params.data,
        event=getattr(ctx, "event", None),
    )
    try:
        rendered = templates.render(template, context)
    except templates.RenderError as error:
        ctx.emit("email.failed", {**log, "to": contact.email, "reason": str(error)})
        return {"failed": str(error)}
    mid = message_id(ctx.key, settings.domain)
    headers = {"X-CLM-Template": params.template, "X-CLM-Category": params.category}
    if params.sequence:
        headers["X-CLM-Sequence"] = f"{params.sequence}/{params.step}"
    message = build_message(
        rendered,
        to=contact.email,
        sender=settings.from_address,
        message_id=mid,
        date=ctx.now,
        unsubscribe_url=link,
        unsubscribe_mailto=settings.unsubscribe_mailto,
        reply_to=params.reply_to or settings.reply_to,
        headers=headers,
    )
    log.update(message_id=mid, to=contact.email, subject=rendered.subject)
    veto = ctx.veto_now()  # last, before the SMTP conversation: an unsubscribe since counts
    if veto is not None:
        return {"vetoed": veto}
    try:
        where = (transport or transport_for(settings, ctx.registry)).send(
            message, sender=settings.envelope_from, recipients=[contact.email]
        )
    except PermanentDeliveryError as error:
        # The existing bounce reducer withdraws consent; the handler suppresses the address.
        ctx.emit(
            "email.bounced",
            {**log, "type": "hard", "address": contact.email, "reason": str(error)},
        )
        return {"failed": f"permanent failure, address suppressed: {error}"}
    # A TemporaryDeliveryError (or any other) propagates: the engine retries with backoff.
    # The event is stamped with the time the message was due (the engine keeps a contact's
    # history in logical order); "sent_at" is when it really left, which frequency caps count.
    ctx.emit("email.sent", {**log, "location": where, "sent_at": utc_text(ctx.now)})
    return {"sent": mid, "to": contact.email, "location": where}


class _Simulated:
    """A transport that sends nothing: what ``clm simulate`` uses instead of the real one."""

    def send(self, message: Any, *, sender: str, recipients: list[str]) -> str:
        return "simulated: not sent"

    def close(self) -> None:
        pass


def simulate_send(ctx: Any, params: SendParams) -> dict[str, Any]:
    """``email.send`` in a simulation: rendered, checked and logged as sent, reaching nobody.

    Why not just skip it: the frequency caps and the send log count what went out, so a
    backtest that skipped sends would never defer anything and would overstate what a drip
    sends. Rendering also finds templates that fail for some contacts before they go live.
    """
    return send(ctx, params, transport=_Simulated())


# -- sequences ---------------------------------------------------------------------------------


class StartParams(BaseModel):
    """``{"action": "email.start_sequence", "with": {"sequence": "onboarding"}}``."""

    model_config = ConfigDict(extra="forbid")

    sequence: Name

    @classmethod
    def check_references(cls, params: StartParams, documents: dict[str, Any]) -> list[str]:
        return _missing("sequence", params.sequence, documents.get(sequences.KIND, {}))


class StopParams(BaseModel):
    """``{"action": "email.stop_sequence", "with": {"sequence": "win-back"}}``; or
    ``{"all": true}`` for every sequence the contact is in."""

    model_config = ConfigDict(extra="forbid")

    sequence: Name | None = None
    all: bool = False
    reason: str = ""

    @classmethod
    def check_references(cls, params: StopParams, documents: dict[str, Any]) -> list[str]:
        if params.sequence is None:
            return [] if params.all else ["give a 'sequence' to stop, or \"all\": true"]
        return _missing("sequence", params.sequence, documents.get(sequences.KIND, {}))


class StepParams(BaseModel):
    """One step of one enrollment; enqueued by the sequence actions, not written in rules."""

    model_config = ConfigDict(extra="forbid")

    sequence: Name
    enrollment: str
    step: Name


def _exit_stages(seq: Sequence, stages: tuple[str, ...]) -> list[str]:
    if seq.exit.stage is None:
        return []
    if seq.exit.stage not in stages:
        return [seq.exit.stage]
    return list(stages[stages.index(seq.exit.stage) :])


def _condition_exit(seq: Sequence, ctx: ActionContext) -> str | None:
    """The exit condition, if the sequence has one and it holds now."""
    if seq.exit.if_ is None:
        return None
    return "exit condition holds" if ctx.holds(seq.exit.if_) else None


def _stage_exit(seq: Sequence, ctx: Any) -> str | None:
    stage = ctx.contact.stage
    if stage is not None and stage in _exit_stages(seq, tuple(ctx.stages)):
        return f"reached stage {stage}"
    return None


def _logical_now(ctx: ActionContext) -> datetime:
    """When this action was meant to run (``ctx.due_at``, never later than now): step times
    count from there, so downtime, a backlog or a retry does not push every later step back."""
    due = ctx.due_at
    return min(due, ctx.now) if isinstance(due, datetime) else ctx.now


def start_sequence(ctx: Any, params: StartParams) -> dict[str, Any]:
    seq = _documents(ctx).get(sequences.KIND, {}).get(params.sequence)
    if seq is None:
        return {"failed": f"no sequence {params.sequence!r} is loaded"}
    tables = ctx.tables
    if not seq.allow_reentry:
        active = tables["email_enrollments"].one(
            {"contact_id": ctx.contact.id, "sequence": seq.sequence, "status": "active"},
            columns=["id"],
        )
        if active is not None:
            return {"skipped": f"already in sequence {seq.sequence!r} (enrollment {active['id']})"}
    reason = _stage_exit(seq, ctx) or _condition_exit(seq, ctx)
    if reason:
        return {"skipped": f"not enrolled in {seq.sequence!r}: {reason}"}
    enrollment = "e-" + hashlib.sha256(ctx.key.encode()).hexdigest()[:24]
    started = _logical_now(ctx)
    store.enroll(
        tables,
        enrollment=enrollment,
        contact_id=ctx.contact.id,
        sequence=seq.sequence,
        at=utc_text(started),
        exit_events=list(seq.exit.events),
        exit_stages=_exit_stages(seq, tuple(ctx.stages)),
    )
    first = seq.steps[0]
    due = next_time(started, first, ctx.contact.timezone)
    _enqueue_step(ctx, seq, enrollment, first.id, due)
    return {"enrolled": enrollment, "sequence": seq.sequence, "first_step_at": utc_text(due)}


def _enqueue_step(ctx: Any, seq: Sequence, enrollment: str, step: str, due: datetime) -> None:
    ctx.enqueue(
        "email.sequence_step",
        {"sequence": seq.sequence, "enrollment": enrollment, "step": step},
        due_at=due,
        occurrence=f"step-{step}",
    )


def sequence_step(ctx: Any, params: StepParams) -> dict[str, Any]:
    tables = ctx.tables
    row = store.enrollment(tables, params.enrollment)
    if row is None:
        return {"skipped": "the enrollment is gone (the contact was erased?)"}
    if row["status"] != "active":
        why = row["exit_reason"] or row["status"]
        return {"skipped": f"left sequence {params.sequence!r}: {why}"}
    seq = _documents(ctx).get(sequences.KIND, {}).get(params.sequence)
    now = _logical_now(ctx)
    if seq is None:
        store.end_enrollment(tables, params.enrollment, "stopped", "sequence no longer loaded", now)
        return {"skipped": f"sequence {params.sequence!r} is no longer loaded"}
    try:
        index = seq.step_index(params.step)
    except KeyError:
        store.end_enrollment(
            tables, params.enrollment, "stopped", f"step {params.step} removed", now
        )
        return {"skipped": f"sequence {params.sequence!r} has no step {params.step!r} any more"}
    reason = _stage_exit(seq, ctx) or _condition_exit(seq, ctx)
    if reason:
        store.end_enrollment(tables, params.enrollment, "exited", reason, now)
        return {"skipped": f"left sequence {seq.sequence!r}: {reason}"}
    step = seq.steps[index]
    arm, holdout, overrides = _arm_of(ctx, step, params.enrollment, now)
    chosen = sequences.step_params(step, overrides)
    send_params = {
        **chosen,
        "category": step.category or seq.category,
        "sequence": seq.sequence,
        "step": step.id,
        "enrollment": params.enrollment,
    }
    result: dict[str, Any] = {"step": step.id, "template": chosen["template"]}
    if arm is not None and step.experiment is not None:
        result["experiment"] = {"name": step.experiment.name, "arm": arm}
    if holdout:
        result["skipped_send"] = "holdout arm of the step's experiment"
    else:
        ctx.enqueue("email.send", send_params, due_at=now, occurrence=f"send-{step.id}")
    if index + 1 < len(seq.steps):
        following = seq.steps[index + 1]
        due = next_time(now, following, ctx.contact.timezone)
        _enqueue_step(ctx, seq, params.enrollment, following.id, due)
        tables["email_enrollments"].update(
            {"id": params.enrollment}, {"step": step.id, "last_step_at": utc_text(now)}
        )
        result["next"] = {"step": following.id, "at": utc_text(due)}
    else:
        tables["email_enrollments"].update(
            {"id": params.enrollment},
            {
                "step": step.id,
                "last_step_at": utc_text(now),
                "status": "completed",
                "ended_at": utc_text(now),
                "exit_reason": "completed",
            },
        )
    return result


def _arm_of(
    ctx: Any, step: Any, enrollment: str, now: datetime
) -> tuple[str | None, bool, dict[str, Any]]:
    """The contact's arm in the step's experiment (its exposure recorded by the engine):
    ``(arm, holdout, the arm's with)``; ``(None, False, {})`` for a step without one."""
    if step.experiment is None:
        return None, False, {}
    compiled = _documents(ctx).get("experiment", {}).get(step.experiment.name)
    if compiled is None:  # not loaded with the sequence: the step as written
        return None, False, {}
    arm, _ = compiled.expose(
        ctx.tables, contact_id=ctx.contact.id, at=now, occurrence=f"{enrollment}/{step.id}"
    )
    spec = compiled.arm(arm)
    return arm, bool(spec and spec.holdout), dict(spec.with_) if spec else {}


def stop_sequence(ctx: Any, params: StopParams) -> dict[str, Any]:
    reason = params.reason or f"stopped by {ctx.ruleset}/{ctx.rule}"
    at = utc_text(_logical_now(ctx))
    where: dict[str, Any] = {"contact_id": ctx.contact.id, "status": "active"}
    if not params.all:
        where["sequence"] = params.sequence
    stopped = ctx.tables["email_enrollments"].update(
        where, {"status": "stopped", "exit_reason": reason, "ended_at": at}
    )
    if not stopped:
        return {"skipped": f"not in sequence {params.sequence or 'any'}"}
    return {"stopped": stopped}
