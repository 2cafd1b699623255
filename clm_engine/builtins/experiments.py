"""Experiments' core parts, registered like any plugin's: the exposures table, the fact that
reads a contact's arm, and the erasure of a contact's exposures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..erasure import Erasure
from ..experiments import ARM_FACT, KIND
from ..experiments.exposures import EXPOSURES, TABLE
from ..hooks import hookimpl
from ..store.tables import Tables
from ..types import MISSING, FactContext


def experiment_arm(ctx: FactContext, experiment: str) -> Any:
    """The contact's arm in ``experiment``: the one recorded at its first exposure, else the
    one the stable hash gives under the current weights (MISSING: no such experiment)."""
    compiled = ctx.documents.get(KIND, {}).get(experiment)
    if compiled is None:
        return MISSING
    return compiled.arm_of(ctx.contact.id, ctx.tables)


def _check_arm_args(args: dict[str, Any]) -> None:
    name = args.get("experiment")
    if not isinstance(name, str) or not name:
        raise ValueError('needs "experiment": the experiment\'s name, like {"experiment": "x"}')
    if set(args) - {"experiment"}:
        raise ValueError(f"takes only 'experiment', not {sorted(set(args) - {'experiment'})}")


experiment_arm.check_args = _check_arm_args  # type: ignore[attr-defined]  # check_args: the documented optional attribute of a compute function


@hookimpl
def register_tables(register: Callable[..., None]) -> None:
    register(EXPOSURES)


@hookimpl
def register_facts(register: Callable[..., None]) -> None:
    register(
        ARM_FACT,
        experiment_arm,
        type="text",
        moved_by=[],
        description=(
            'The contact\'s arm in an experiment: args {"experiment": "<name>"}; also written '
            "contact.experiments.<name>"
        ),
    )


@hookimpl
def forget_contact(tables: Tables, contact_id: str, erasure: Erasure) -> dict[str, int]:
    """An erased contact's exposures go, on either store: they are about that person alone."""
    removed = tables[TABLE].delete({"contact_id": contact_id})
    tables[TABLE].pseudonymise(erasure)
    return {TABLE: removed}
