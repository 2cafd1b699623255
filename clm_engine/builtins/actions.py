"""The core's actions: stage, scores, tags, attributes and event chaining.

Each changes the contact only by emitting an internal ``clm.*`` event that a reducer folds in
(``builtins/reducers.py``): contact state stays a fold of events, so a late event that makes
the engine re-fold a contact's history keeps what rules did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..hooks import hookimpl
from ..models import DurationSpec, EventType, Name, duration_to_timedelta
from ..types import ActionContext


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StageSet(_Params):
    stage: Name
    reason: str | None = None
    backward: bool = Field(
        default=False, description="Allow moving to an earlier stage (needs a reason)."
    )

    @model_validator(mode="after")
    def _backward_needs_reason(self) -> StageSet:
        if self.backward and not self.reason:
            raise ValueError("moving a contact backward needs a 'reason'")
        return self


def set_stage(ctx: ActionContext, params: StageSet) -> dict[str, Any]:
    current = ctx.contact.stage
    order = {name: index for index, name in enumerate(ctx.stages)}
    if current == params.stage:
        return {"skipped": f"already in stage {params.stage!r}"}
    if params.stage not in order:
        raise ValueError(f"{params.stage!r} is not a stage of the model {list(ctx.stages)}")
    if current in order and order[params.stage] < order[current] and not params.backward:
        return {
            "skipped": f"would move backward from {current!r} to {params.stage!r}; "
            "set backward: true with a reason to allow it"
        }
    cause = f"rule {ctx.rule} of ruleset {ctx.ruleset}"
    if params.reason:
        cause += f": {params.reason}"
    ctx.emit("clm.stage.set", {"stage": params.stage, "cause": cause})
    return {"from": current, "to": params.stage}


class ScoreAdd(_Params):
    score: Name
    points: float
    cap: float | None = Field(default=None, description="The score never goes above this.")
    half_life: DurationSpec | None = Field(
        default=None, description="The score halves over this time since it last changed."
    )


def add_score(ctx: ActionContext, params: ScoreAdd) -> dict[str, Any]:
    half_life = duration_to_timedelta(params.half_life) if params.half_life else None
    ctx.emit(
        "clm.score.add",
        {
            "score": params.score,
            "points": params.points,
            "cap": params.cap,
            "half_life_seconds": half_life.total_seconds() if half_life else None,
        },
    )
    return {"score": params.score, "points": params.points}


class TagParams(_Params):
    tag: Name


def add_tag(ctx: ActionContext, params: TagParams) -> dict[str, Any]:
    if params.tag in ctx.contact.tags:
        return {"skipped": f"already tagged {params.tag!r}"}
    ctx.emit("clm.tag.add", {"tag": params.tag})
    return {"tag": params.tag}


def remove_tag(ctx: ActionContext, params: TagParams) -> dict[str, Any]:
    if params.tag not in ctx.contact.tags:
        return {"skipped": f"not tagged {params.tag!r}"}
    ctx.emit("clm.tag.remove", {"tag": params.tag})
    return {"tag": params.tag}


class AttributeSet(_Params):
    name: Name
    value: Any = Field(description="Any JSON value; null removes the attribute.")


def set_attribute(ctx: ActionContext, params: AttributeSet) -> dict[str, Any]:
    ctx.emit("clm.attribute.set", {"name": params.name, "value": params.value})
    return {"name": params.name}


class EventEmit(_Params):
    type: EventType
    properties: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _not_internal(self) -> EventEmit:
        if self.type.startswith("clm."):
            raise ValueError("event types starting with 'clm.' are the engine's own")
        return self


def emit_event(ctx: ActionContext, params: EventEmit) -> dict[str, Any]:
    ctx.emit(params.type, params.properties)
    return {"type": params.type}


@hookimpl
def register_actions(register: Callable[..., None]) -> None:
    register(
        "stage.set",
        set_stage,
        StageSet,
        description="Move the contact to a lifecycle stage (backward only with a reason).",
        pure=True,
    )
    register(
        "score.add",
        add_score,
        ScoreAdd,
        description="Add points to a named score, with an optional cap and half-life.",
        pure=True,
    )
    register("tag.add", add_tag, TagParams, description="Tag the contact.", pure=True)
    register(
        "tag.remove", remove_tag, TagParams, description="Remove a tag from the contact.", pure=True
    )
    register(
        "attribute.set",
        set_attribute,
        AttributeSet,
        description="Set (or, with null, remove) one of the contact's attributes.",
        pure=True,
    )
    register(
        "event.emit",
        emit_event,
        EventEmit,
        description="Record an event for the contact, which other rules may react to.",
        pure=True,
    )
