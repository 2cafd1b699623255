"""The built-in condition operators, registered like any plugin's.

Their meaning lives in ``clm_engine.conditions.ops`` (next to the compiler that inlines them);
``docs/conditions.md`` is the reference for people.
"""

from __future__ import annotations

from collections.abc import Callable

from ..conditions.ops import OPERATORS
from ..hooks import hookimpl


@hookimpl
def register_operators(register: Callable[..., None]) -> None:
    for operator in OPERATORS:
        register(
            operator.name,
            operator.test,
            prepare=operator.prepare,
            accepts_missing=operator.accepts_missing,
            description=operator.description,
            fact_types=operator.fact_types,
            check=operator.check,
        )
