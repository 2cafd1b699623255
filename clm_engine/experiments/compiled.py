"""An experiment ready to run: each arm's actions validated once, when the rulesets load."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..models import ActionCall, Experiment, ExperimentArm, duration_to_timedelta
from .assignment import arm_at, point_of
from .exposures import TABLE, record_exposure, recorded_arm

Actions = tuple[tuple[ActionCall, dict[str, Any]], ...]


@dataclass(frozen=True)
class CompiledExperiment:
    """One experiment of one rule: its arms, control and each arm's validated actions."""

    spec: Experiment
    ruleset: str
    rule: str
    version: int
    #: Arm name -> the rule's actions with that arm's ``with`` merged in (empty: a holdout).
    actions: dict[str, Actions]
    #: Compiles the goal's ``where``: the rule's compiler, or (for an experiment a plugin's
    #: document declares, like a drip step's) one without segments.
    compiler: Any = None
    #: What each arm gets, for an experiment whose arms are not a rule's actions (a drip
    #: step's template per arm); ``None``: the arm's ``actions``.
    receives: dict[str, list[dict[str, Any]]] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def control(self) -> str:
        """The arm the others are compared with: named, or the first that is not a holdout."""
        if self.spec.control is not None:
            return self.spec.control
        return next(arm.name for arm in self.spec.arms if not arm.holdout)

    @property
    def holdouts(self) -> tuple[str, ...]:
        return tuple(arm.name for arm in self.spec.arms if arm.holdout)

    @property
    def window(self) -> timedelta:
        return duration_to_timedelta(self.spec.goal.within)

    def arm(self, name: str) -> ExperimentArm | None:
        return next((arm for arm in self.spec.arms if arm.name == name), None)

    def hashed_arm(self, contact_id: str) -> ExperimentArm:
        """The arm the hash gives under the current weights."""
        return arm_at(point_of(self.spec.name, contact_id), self.spec.arms)

    def arm_of(self, contact_id: str, tables: Any) -> str:
        """The contact's arm: the one recorded at its first exposure, else the hash's."""
        row = recorded_arm(tables, self.spec.name, contact_id)
        if row is not None and row["arm"] in self.actions:
            return str(row["arm"])
        return self.hashed_arm(contact_id).name

    def expose(
        self,
        tables: Any,
        *,
        contact_id: str,
        at: datetime,
        occurrence: str,
    ) -> tuple[str, Actions]:
        """Put the contact in its arm (recording its first exposure): the arm and its actions."""
        row = recorded_arm(tables, self.spec.name, contact_id)
        if row is not None and row["arm"] in self.actions:
            name = str(row["arm"])
        else:  # not exposed yet (or its arm since removed: hashed again, the row kept)
            name = self.hashed_arm(contact_id).name
        arm = self.arm(name)
        if tables is not None and TABLE in tables:
            record_exposure(
                tables,
                experiment=self.spec.name,
                contact_id=contact_id,
                arm=name,
                holdout=bool(arm and arm.holdout),
                at=at,
                ruleset=self.ruleset,
                rule=self.rule,
                occurrence=occurrence,
                version=self.version,
                existing=row,
            )
        return name, self.actions[name]

    def detail(self, arm: str) -> str:
        """What a decision's trace says about its arm."""
        if arm in self.holdouts:
            return f"experiment {self.spec.name}: arm {arm} (holdout: no action)"
        return f"experiment {self.spec.name}: arm {arm}"


def merged_with(call: ActionCall, arm: ExperimentArm) -> dict[str, Any]:
    """The action's ``with`` with the arm's merged over it (the arm wins, key by key)."""
    return {**call.with_, **arm.with_}
