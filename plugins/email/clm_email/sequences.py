"""Drip sequences: JSON documents beside the rulesets, and the timing of their steps.

```json
{"sequence": "onboarding", "category": "marketing",
 "exit": {"events": ["purchase"], "stage": "purchase"},
 "steps": [
   {"id": "welcome", "template": "onboarding-welcome"},
   {"id": "tips", "template": "onboarding-tips", "after": "P2D", "at": "10:00"}]}
```

A step waits ``after`` (a duration) from the previous step (from the enrollment for the first
step); with ``at``, it goes at that time of day (the contact's own timezone) on the day the wait
ends: "after P2D at 10:00" is day 2 at 10:00. A
contact leaves the sequence when one of the ``exit`` events happens, when it reaches the
``exit`` stage (or a later one), or when the ``exit`` condition holds at a step.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clm_engine import (
    Condition,
    DurationSpec,
    EventType,
    Experiment,
    Name,
    check_experiment_arms,
    closest,
    duration_to_timedelta,
)

from . import templates
from .settings import ClockTime, check_address, parse_clock

#: The document kind (and key) of sequences.
KIND = "sequence"


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Name
    description: str = ""
    template: Name
    #: Wait this long after the previous step (the first step: after the enrollment).
    after: DurationSpec | None = None
    #: At this time of day (HH:MM, the contact's timezone) on the day the wait ends.
    at: ClockTime | None = None
    category: Name | None = None
    reply_to: str | None = None
    #: Template data for this step's email, shown as ``{{ data.name }}``.
    data: dict[str, Any] = Field(default_factory=dict)
    #: An A/B test of this step: each arm's ``with`` may set ``template``, ``data`` (merged
    #: over the step's) and ``reply_to``; a holdout arm skips this step's email (the drip goes
    #: on). See docs/experiments.md of clm-engine.
    experiment: Experiment | None = None

    @model_validator(mode="after")
    def _reply_to(self) -> Step:
        if self.reply_to is not None:
            check_address(self.reply_to)
        return self

    @property
    def wait(self) -> timedelta:
        return duration_to_timedelta(self.after) if self.after is not None else timedelta(0)


class Exit(BaseModel):
    """When a contact leaves the sequence early; any one is enough."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    events: list[EventType] = Field(default_factory=list)
    stage: Name | None = None
    if_: Condition | None = Field(default=None, alias="if")


class Sequence(BaseModel):
    """A drip sequence document."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str | None = Field(default=None, alias="$schema")
    sequence: Name
    description: str = ""
    #: The category of its emails (``marketing`` needs consent; see the settings' exemptions).
    category: Name = "marketing"
    #: False: a contact is in the sequence at most once at a time (a start while enrolled is
    #: skipped). True: every start enrolls again, alongside any running enrollment.
    allow_reentry: bool = False
    exit: Exit = Field(default_factory=Exit)
    steps: Annotated[list[Step], Field(min_length=1, max_length=100)]

    def clm_experiments(self) -> list[tuple[str, Experiment, dict[str, list[dict[str, Any]]]]]:
        """The steps' experiments, for the engine: ``(source, experiment, what each arm
        gets)``."""
        found = []
        for step in self.steps:
            if step.experiment is None:
                continue
            receives = {
                arm.name: []
                if arm.holdout
                else [{"action": "email.send", "with": step_params(step, arm.with_)}]
                for arm in step.experiment.arms
            }
            found.append((f"step {step.id}", step.experiment, receives))
        return found

    def step_index(self, step_id: str) -> int:
        for index, step in enumerate(self.steps):
            if step.id == step_id:
                return index
        raise KeyError(step_id)


#: What an arm of a step's experiment may change.
ARM_KEYS = ("template", "data", "reply_to")


def step_params(step: Step, arm: dict[str, Any]) -> dict[str, Any]:
    """The step's template, data and reply-to with an arm's ``with`` over them."""
    params: dict[str, Any] = {"template": arm.get("template", step.template)}
    data = {**step.data, **(arm.get("data") or {})}
    if data:
        params["data"] = data
    reply_to = arm.get("reply_to", step.reply_to)
    if reply_to:
        params["reply_to"] = reply_to
    return params


def next_time(previous: datetime, step: Step, timezone: str) -> datetime:
    """When ``step`` is due, the previous step (or the enrollment) having been at ``previous``.

    Without ``at``: ``previous + after``. With ``at``: that time of day on the contact's wall
    clock, on the day the wait ends, so "after 2 days at 10:00" is the day after tomorrow at
    10:00 whatever time the previous step ran (a drip's "day 2"); never before ``previous``
    (then the next day). Across a daylight-saving change "10:00" stays 10:00 local time.
    """
    due = previous + step.wait
    if step.at is None:
        return due
    zone = ZoneInfo(timezone)
    wanted = parse_clock(step.at)
    day = due.astimezone(zone).date()
    candidate = datetime.combine(day, wanted, tzinfo=zone)
    if candidate < previous:
        candidate = datetime.combine(day + timedelta(days=1), wanted, tzinfo=zone)
    return candidate.astimezone(UTC)


def check_sequence(document: Sequence, context: Any) -> list[tuple[str, str]]:
    """Semantic problems, as ``(json pointer, message)``: what the model alone cannot know.

    Duplicate step ids, templates that do not exist, an exit stage outside the stage model and
    an exit condition the engine cannot evaluate (unknown facts, operators ...).
    """
    problems: list[tuple[str, str]] = []
    documents = getattr(context, "documents", None) or {}
    known = documents.get(templates.KIND, {})
    seen: set[str] = set()
    for index, step in enumerate(document.steps):
        if step.id in seen:
            problems.append((f"/steps/{index}/id", f"step id {step.id!r} is used twice"))
        seen.add(step.id)
        if step.template not in known:
            problems.append(
                (f"/steps/{index}/template", unknown_name("template", step.template, known))
            )
        if step.experiment is not None:
            problems += _experiment_problems(step.experiment, f"/steps/{index}/experiment", context)
    stages = tuple(getattr(context, "stages", None) or ())
    if document.exit.stage is not None and stages and document.exit.stage not in stages:
        problems.append(
            ("/exit/stage", f"no stage {document.exit.stage!r}; stages: {', '.join(stages)}")
        )
    if document.exit.if_ is not None:
        for pointer, message in context.conditions.problems(document.exit.if_):
            problems.append((f"/exit/if{pointer}", message))
    return problems


def _experiment_problems(experiment: Experiment, at: str, context: Any) -> list[tuple[str, str]]:
    """A step's experiment: the engine's checks of any experiment, and each arm's ``with``."""
    documents = getattr(context, "documents", None) or {}
    known = documents.get(templates.KIND, {})
    problems = [(issue.pointer, issue.message) for issue in check_experiment_arms(experiment, at)]
    seen: set[str] = set()
    for index, arm in enumerate(experiment.arms):
        where = f"{at}/arms/{index}"
        if arm.name in seen:
            problems.append((f"{where}/name", f"arm {arm.name!r} is named twice"))
        seen.add(arm.name)
        if arm.holdout and arm.with_:
            problems.append((f"{where}/with", "a holdout arm sends nothing: its 'with' is unused"))
            continue
        for key, value in arm.with_.items():
            if key not in ARM_KEYS:
                problems.append(
                    (
                        f"{where}/with/{key}",
                        f"an arm of a step sets {', '.join(ARM_KEYS)}, not {key!r}",
                    )
                )
            elif key == "template" and value not in known:
                problems.append(
                    (f"{where}/with/template", unknown_name("template", str(value), known))
                )
            elif key == "data" and not isinstance(value, dict):
                problems.append((f"{where}/with/data", "data is an object of template values"))
            elif key == "reply_to":
                try:
                    check_address(str(value))
                except ValueError as error:
                    problems.append((f"{where}/with/reply_to", str(error)))
    if experiment.goal.where is not None:
        for pointer, message in context.conditions.problems(experiment.goal.where):
            problems.append((f"{at}/goal/where{pointer}", message))
    return problems


def warn_sequence(document: Sequence, context: Any) -> list[tuple[str, str]]:
    """Warnings, as ``(json pointer, message)``: a step whose template needs a ``data`` key
    the step never passes (``template_data``)."""
    documents = getattr(context, "documents", None) or {}
    known = documents.get(templates.KIND, {})
    warnings: list[tuple[str, str]] = []
    for index, step in enumerate(document.steps):
        template = known.get(step.template)
        for message in templates.missing_data(template, step.template, step.data):
            warnings.append((f"/steps/{index}", message))
    return warnings


def unknown_name(kind: str, name: str, known: Any) -> str:
    """``no template 'x'; did you mean 'y'?`` (or the known names): one wording everywhere."""
    close = closest(name, known)
    if close:
        return f"no {kind} {name!r}; did you mean {close!r}?"
    return f"no {kind} {name!r}; known: {', '.join(sorted(known)) or 'none'}"
