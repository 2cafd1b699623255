"""Lifecycle analytics: predictive CLV (BG/NBD and Gamma-Gamma), RFM segments and the KPIs of
``clm report``, computed by aggregate queries in the store (``clm_engine.store.analytics``).

The Python API: :func:`refresh` (what ``clm analytics refresh`` runs), :func:`fit_models`,
:func:`load_definitions`; the models in :mod:`clm_engine.analytics.predictive`. Figures are
defined in ``docs/metrics.md``.
"""

from .definitions import Definitions, DefinitionsError, load_definitions
from .predictive import BGNBD, FitError, GammaGamma, fit_bgnbd, fit_gamma_gamma
from .refresh import RefreshResult, fit_models, purchase_summary, refresh

__all__ = [
    "BGNBD",
    "Definitions",
    "DefinitionsError",
    "FitError",
    "GammaGamma",
    "RefreshResult",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "fit_models",
    "load_definitions",
    "purchase_summary",
    "refresh",
]
