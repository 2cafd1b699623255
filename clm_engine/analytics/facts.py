"""The analytics facts, a built-in plugin: predicted value and churn (BG/NBD, Gamma-Gamma)
and RFM scores and segment, for rules.

They read what the last ``clm analytics refresh`` stored: the fitted models and each
customer's purchase history (as of that refresh), aged to the condition's ``now``, so
``p_alive`` falls day by day between refreshes. A contact who is not a customer yet, or a
store never refreshed, has no value (MISSING): a condition on it does not hold.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from ..conditions.values import parse_duration
from ..hooks import hookimpl
from ..store import analytics as sql
from ..store.analytics_dialect import fact_db
from ..types import MISSING, FactContext
from .health import KIND as HEALTH
from .health import HealthDefinition, definition_in, health_in_context, health_of

#: The CLV discount when the store does not say (kept in step with ``sweep.MONTHLY_DISCOUNT``,
#: which is not imported here: numpy and scipy load only when a prediction is made).
_MONTHLY_DISCOUNT = 0.01

_WEEK = timedelta(weeks=1)
_MODELS = "analytics.models"  # ctx.cache keys
_HISTORY = "analytics.history"
_RFM = "analytics.rfm"


def _db(ctx: FactContext) -> Any:
    """The analytics tables of ``ctx``'s store (either kind)."""
    return fact_db(ctx.db, ctx.tables)


def _models(ctx: FactContext) -> Any:
    if _MODELS not in ctx.cache:
        from .sweep import models

        ctx.cache[_MODELS] = models(_db(ctx))
    return ctx.cache[_MODELS]


def _history(ctx: FactContext) -> tuple[float, float, float, float] | None:
    """(x, t_x, T, repeat mean) of the contact, T in weeks up to ``ctx.now``."""
    if _HISTORY not in ctx.cache:
        row = sql.customer(_db(ctx), ctx.contact.id)
        if row is None:
            ctx.cache[_HISTORY] = None
        else:
            first_day, last_day, x, mean = row
            first = date.fromisoformat(first_day)
            t_x = (date.fromisoformat(last_day) - first) / _WEEK
            T = max(t_x, (ctx.now.date() - first) / _WEEK)
            ctx.cache[_HISTORY] = (float(x), t_x, T, float(mean))
    history: tuple[float, float, float, float] | None = ctx.cache[_HISTORY]
    return history


def p_alive(ctx: FactContext) -> Any:
    """The probability that the customer is still active (BG/NBD)."""
    if ctx.db is None:
        return MISSING
    bgnbd, _, _ = _models(ctx)
    history = _history(ctx)
    if bgnbd is None or history is None:
        return MISSING
    x, t_x, T, _ = history
    return round(float(bgnbd.p_alive(x, t_x, T)), 4)


def expected_purchases(ctx: FactContext, within: Any = "P364D") -> Any:
    """Expected purchases in the next ``within`` (52 weeks without it), BG/NBD."""
    if ctx.db is None:
        return MISSING
    bgnbd, _, _ = _models(ctx)
    history = _history(ctx)
    if bgnbd is None or history is None:
        return MISSING
    x, t_x, T, _ = history
    weeks = parse_duration(within) / _WEEK
    return round(float(bgnbd.expected_purchases(weeks, x, t_x, T)), 4)


def _check_within(args: dict[str, Any]) -> None:
    if args.get("within") is not None:
        parse_duration(args["within"])


expected_purchases.check_args = _check_within  # type: ignore[attr-defined]  # check_args: the documented optional attribute of a compute function


def predicted_clv(ctx: FactContext) -> Any:
    """Predicted value of the customer's purchases over the next 12 months, discounted."""
    if ctx.db is None:
        return MISSING
    bgnbd, gamma_gamma, settings = _models(ctx)
    history = _history(ctx)
    if bgnbd is None or gamma_gamma is None or history is None:
        return MISSING
    x, t_x, T, mean = history
    from .predictive import predicted_clv as clv_of

    value = clv_of(
        bgnbd,
        gamma_gamma,
        x,
        t_x,
        T,
        mean,
        months=int(settings.get("months", 12)),
        monthly_discount=float(settings.get("monthly_discount", _MONTHLY_DISCOUNT)),
    )
    return round(float(value), 2)


def _rfm(ctx: FactContext, index: int) -> Any:
    if ctx.db is None:
        return MISSING
    if _RFM not in ctx.cache:
        ctx.cache[_RFM] = sql.rfm_of(_db(ctx), ctx.contact.id)
    row = ctx.cache[_RFM]
    return MISSING if row is None else row[index]


def rfm_recency(ctx: FactContext) -> Any:
    return _rfm(ctx, 0)


def rfm_frequency(ctx: FactContext) -> Any:
    return _rfm(ctx, 1)


def rfm_monetary(ctx: FactContext) -> Any:
    return _rfm(ctx, 2)


def rfm_segment(ctx: FactContext) -> Any:
    return _rfm(ctx, 3)


def health_score(ctx: FactContext, definition: Any = "default") -> Any:
    """The contact's health score (0-100) as of ``now``: the weighted mean of its parts."""
    if ctx.db is None and ctx.tables is None:
        return MISSING
    key = ("analytics.health", definition)
    if key not in ctx.cache:
        found = definition_in(ctx.documents, str(definition))
        if ctx.count_events is not None:  # the history folded so far, as rules see it
            ctx.cache[key] = health_in_context(ctx, found)
        else:
            ctx.cache[key] = health_of(_db(ctx), ctx.contact.id, found, ctx.now)
    score = ctx.cache[key].score
    return MISSING if score is None else score


def _check_definition(args: dict[str, Any]) -> None:
    if not isinstance(args.get("definition", "default"), str):
        raise ValueError('"definition" names a health definition, e.g. "default"')


health_score.check_args = _check_definition  # type: ignore[attr-defined]  # check_args: the documented optional attribute of a compute function


@hookimpl
def register_documents(register: Callable[..., None]) -> None:
    register(
        HEALTH,
        HealthDefinition,
        description=(
            "Customer health score: weighted parts (usage, support tickets, NPS) over a "
            "window (docs/metrics.md)."
        ),
    )


@hookimpl
def register_facts(register: Callable[..., None]) -> None:
    register(
        "contact.health.score",
        health_score,
        type="number",
        description=(
            "Customer health, 0-100: the weighted mean of the parts of the health definition "
            '(usage, support tickets, NPS by default); args {"definition": "name"} for '
            "another one loaded beside the rulesets"
        ),
    )
    register(
        "contact.p_alive",
        p_alive,
        type="number",
        description="Probability (0-1) that the customer is still active (BG/NBD model)",
    )
    register(
        "contact.expected_purchases",
        expected_purchases,
        type="number",
        description=(
            'Expected purchases in the next 52 weeks (BG/NBD); args {"within": "P90D"} '
            "for another horizon"
        ),
    )
    register(
        "contact.predicted_clv",
        predicted_clv,
        type="number",
        description=(
            "Predicted value of the next 12 months' purchases, discounted 1% a month "
            "(BG/NBD x Gamma-Gamma)"
        ),
    )
    for part, compute in (
        ("recency", rfm_recency),
        ("frequency", rfm_frequency),
        ("monetary", rfm_monetary),
    ):
        register(
            f"contact.rfm.{part}",
            compute,
            type="number",
            description=f"RFM {part} score, 1 (lowest fifth) to 5 (highest fifth)",
        )
    register(
        "contact.rfm.segment",
        rfm_segment,
        type="text",
        description=(
            "RFM segment (new, recent, promising, potential loyalist, loyal, champion, "
            "at risk, hibernating, lost, other; editable definitions)"
        ),
    )
