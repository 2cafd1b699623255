"""Which arm a contact is in: a pure function of (experiment name, contact id) and the weights.

The pair is hashed with SHA-256 to a point in [0, 1) (the first 53 bits, exactly what a float
holds); the arms lie on [0, 1) end to end in the order the ruleset lists them, each as wide as
its share of the total weight, and the contact is in the arm its point falls in. Nothing is
random and nothing is stored to decide it: the same contact gets the same arm in every process,
after every restart and replay, and under every ruleset version that keeps the name and the
weights. (What moves when weights change is in ``docs/experiments.md``; once a contact has been
exposed, its recorded arm is kept: see ``clm_engine.experiments.exposures``.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ..models import ExperimentArm

_BITS = 53


def point_of(experiment: str, contact_id: str) -> float:
    """The contact's stable point in [0, 1) for this experiment."""
    digest = hashlib.sha256(f"{experiment}\x00{contact_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> (64 - _BITS)) / float(1 << _BITS)


def arm_at(point: float, arms: Sequence[ExperimentArm]) -> ExperimentArm:
    """The arm whose slice of [0, 1) holds ``point`` (arms of weight 0 have no slice)."""
    total = sum(arm.weight for arm in arms)
    edge = 0.0
    for arm in arms:
        if arm.weight <= 0:
            continue
        edge += arm.weight / total
        if point < edge:
            return arm
    return next(arm for arm in reversed(arms) if arm.weight > 0)  # rounding at the top end


def assign(experiment: str, contact_id: str, arms: Sequence[ExperimentArm]) -> ExperimentArm:
    """The arm of ``contact_id`` in ``experiment`` by the hash alone (no recorded exposure)."""
    return arm_at(point_of(experiment, contact_id), arms)
