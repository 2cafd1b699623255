"""Lifecycle analytics: predictive CLV (BG/NBD and Gamma-Gamma), RFM segments and the KPIs of
``clm report``, computed by aggregate queries in the store (``clm_engine.store.analytics``).

The Python API: :func:`refresh` (what ``clm analytics refresh`` runs), :func:`fit_models`,
:func:`load_definitions`, :func:`kpis` (on ``clm_engine.store.analytics_dialect.analytics_db(
store)``, either store), :func:`load_health` and :func:`health_of` (the health score),
:func:`load_spend` (a spend file); the models in :mod:`clm_engine.analytics.predictive`.
Figures are defined in ``docs/metrics.md``.

Names are imported on first use: numpy and scipy load only when a model is fitted or a
prediction made, not with every ``clm`` command (the facts are a built-in plugin).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real names for type checkers; at run time, __getattr__ below
    from .definitions import Definitions, DefinitionsError, load_definitions
    from .figures import kpis
    from .health import HealthDefinition, health_of, load_health
    from .predictive import BGNBD, FitError, GammaGamma, fit_bgnbd, fit_gamma_gamma
    from .spend import SpendFile, SpendFileError, load_spend
    from .sweep import RefreshResult, fit_models, purchase_summary, refresh

_WHERE = {
    "BGNBD": "predictive",
    "FitError": "predictive",
    "GammaGamma": "predictive",
    "fit_bgnbd": "predictive",
    "fit_gamma_gamma": "predictive",
    "Definitions": "definitions",
    "DefinitionsError": "definitions",
    "load_definitions": "definitions",
    "RefreshResult": "sweep",
    "fit_models": "sweep",
    "purchase_summary": "sweep",
    "refresh": "sweep",
    "kpis": "figures",
    "HealthDefinition": "health",
    "health_of": "health",
    "load_health": "health",
    "SpendFile": "spend",
    "SpendFileError": "spend",
    "load_spend": "spend",
}

__all__ = [
    "BGNBD",
    "Definitions",
    "DefinitionsError",
    "FitError",
    "GammaGamma",
    "HealthDefinition",
    "RefreshResult",
    "SpendFile",
    "SpendFileError",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "fit_models",
    "health_of",
    "kpis",
    "load_definitions",
    "load_health",
    "load_spend",
    "purchase_summary",
    "refresh",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
