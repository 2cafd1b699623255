"""The KPIs of ``clm report``: each figure is an aggregate query in the store
(``clm_engine.store.analytics``) combined here into rates. ``docs/metrics.md`` defines every
figure; ``kpis()`` is the Python API (``clm report --json`` prints its result under
``"analytics"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..models import utc_text
from ..store import analytics as sql

if TYPE_CHECKING:
    from ..models import Ruleset
    from .health import HealthDefinition
    from .spend import SpendFile


def _rate(part: float, whole: float, digits: int = 4) -> float | None:
    return round(part / whole, digits) if whole else None


def kpis(
    db: Any,
    *,
    now: datetime,
    stages: Sequence[str],
    activation_event: str = "purchase",
    activation_days: float = 30,
    spend: SpendFile | None = None,
    rulesets: Sequence[Ruleset] = (),
    health: HealthDefinition | None = None,
) -> dict[str, Any]:
    """Every KPI as of ``now`` (events before it), for the stage model ``stages``, on the
    store ``db`` (``clm_engine.store.analytics_dialect.analytics_db``: SQLite or PostgreSQL).
    ``spend``: acquisition spend from a file, added to the ``marketing.spend`` events.
    ``rulesets``: the rules whose goals are attributed and which the journey map draws;
    ``health``: the health score's definition (the shipped default without it)."""
    from .health import definition_in, health_summary

    until = utc_text(now.astimezone(UTC))
    year_ago = utc_text(now.astimezone(UTC) - timedelta(days=365))
    two_years_ago = utc_text(now.astimezone(UTC) - timedelta(days=730))
    return {
        "as_of": until,
        "funnel": funnel(db, stages),
        "stage_flows": [
            {"from": before, "to": after, "transitions": n}
            for before, after, n in sql.stage_flows(db)
        ],
        "cohorts": cohorts(db, until=until),
        "churn_by_month": [
            {
                "month": month,
                "active_before": before,
                "churned": gone,
                "churn_rate": _rate(gone, before),
            }
            for month, before, gone in sql.churned(db, until=until)
        ],
        "purchases": purchase_kpis(db, until=until, year_ago=year_ago, two_years_ago=two_years_ago),
        "nps_by_month": [
            {
                "month": month,
                "answers": n,
                "promoters": hi,
                "detractors": lo,
                "nps": round(100 * (hi - lo) / n, 1),
            }
            for month, n, hi, lo in sql.survey_scores(db, "nps.answered", until=until)
        ],
        "csat_by_month": [
            {"month": month, "answers": n, "satisfied": hi, "csat": round(100 * hi / n, 1)}
            for month, n, hi, _ in sql.survey_scores(db, "csat.answered", until=until)
        ],
        "email_by_template": [
            {
                "template": template,
                "sent": sent,
                "opened": opened,
                "clicked": clicked,
                "unsubscribed": unsubscribed,
                "bounced": bounced,
                "open_rate": _rate(opened, sent),
                "click_rate": _rate(clicked, sent),
            }
            for template, sent, opened, clicked, unsubscribed, bounced in sql.email_engagement(
                db, until=until
            )
        ],
        "activation": _share(
            sql.activation(
                db, event_type=activation_event, within_days=activation_days, until=until
            ),
            "signed_up",
            "activated",
            "activation_rate",
        )
        | {"event": activation_event, "within_days": activation_days},
        "referral": _share(sql.referred(db, until=until), "signed_up", "referred", "referral_rate"),
        "acquisition": acquisition(db, until=until, spend=spend),
        "predictive": predictive_summary(db),
        "rfm": {
            "segments": sql.rfm_segments(db),
            "grid": [{"r": r, "f": f, "customers": n} for r, f, n in sql.rfm_grid(db)],
        },
        "health": health_summary(db, health or definition_in({}), now.astimezone(UTC)),
        "goals": goals(db, rulesets, until=until),
        "journey": journey(db, rulesets, stages, until=until),
        "rule_fires_by_week": [
            {"week": week, "rule": rule, "fires": n} for week, rule, n in sql.rule_fires_by_week(db)
        ],
    }


def acquisition(db: Any, *, until: str, spend: SpendFile | None) -> dict[str, Any]:
    """CAC and ROMI per channel and over all channels."""
    rows = sql.acquisition(db, until=until, spend=spend.rows if spend is not None else ())
    channels = [_channel(channel, spent, n, revenue) for channel, spent, n, revenue in rows]
    total = _channel(
        None,
        sum(r[1] for r in rows),
        sum(r[2] for r in rows),
        sum(r[3] for r in rows),
    )
    return {
        "channels": channels,
        "total": total,
        "spend_file": None if spend is None else spend.path,
        "currency": None if spend is None else spend.currency,
    }


def _channel(channel: str | None, spent: float, customers: int, revenue: float) -> dict[str, Any]:
    return {
        "channel": channel,
        "spend": round(spent, 2),
        "customers": customers,
        "revenue": round(revenue, 2),
        "cac": _rate(spent, customers, 2),
        "romi": _rate(revenue - spent, spent),
    }


def goals(db: Any, rulesets: Sequence[Ruleset], *, until: str) -> list[dict[str, Any]]:
    """Conversions and revenue attributed to each rule that declares a goal."""
    from ..rulesets.goals import goal_query

    result = []
    for ruleset in rulesets:
        for rule in ruleset.rules:
            if rule.goal is None:
                continue
            query = goal_query(rule.goal)
            exposed, converted, conversions, revenue = sql.goal_attribution(
                db, ruleset=ruleset.ruleset, rule=rule.id, goal=query, until=until
            )
            result.append(
                {
                    "ruleset": ruleset.ruleset,
                    "rule": rule.id,
                    "goal": query.description,
                    "exposed": exposed,
                    "converted": converted,
                    "conversion_rate": _rate(converted, exposed),
                    "conversions": conversions,
                    "revenue": round(revenue, 2),
                    "revenue_per_exposed": _rate(revenue, exposed, 2),
                }
            )
    return result


def journey(
    db: Any, rulesets: Sequence[Ruleset], stages: Sequence[str], *, until: str
) -> dict[str, Any]:
    """The journey map's data: the rules that move contacts between stages and the
    touchpoints at each stage, with their counts (``clm_engine.analytics.journey``)."""
    from .journey import journey_map

    return journey_map(db, rulesets, stages, until=until)


def _share(pair: tuple[int, int], whole: str, part: str, rate: str) -> dict[str, Any]:
    return {whole: pair[0], part: pair[1], rate: _rate(pair[1], pair[0])}


def funnel(db: Any, stages: Sequence[str]) -> list[dict[str, Any]]:
    rows = sql.funnel(db, stages)
    result = []
    for index, (stage, reached, went_on, median_days, backward) in enumerate(rows):
        last = index == len(rows) - 1
        conversion = None if last else _rate(went_on, reached)
        result.append(
            {
                "stage": stage,
                "reached": reached,
                "converted_to_next": None if last else went_on,
                "conversion": conversion,
                "drop_off": None if conversion is None else round(1 - conversion, 4),
                "median_days_in_stage": None if median_days is None else round(median_days, 2),
                "backward_moves_in": backward,
            }
        )
    return result


def cohorts(db: Any, *, until: str) -> list[dict[str, Any]]:
    by_cohort: dict[str, dict[str, Any]] = {}
    for cohort, age, size, active in sql.cohorts(db, until=until):
        entry = by_cohort.setdefault(cohort, {"cohort": cohort, "size": size, "active": {}})
        entry["active"][age] = active
    result = []
    for entry in by_cohort.values():
        ages = range(max(entry["active"]) + 1)
        counts = [entry["active"].get(age, 0) for age in ages]
        result.append(
            {
                "cohort": entry["cohort"],
                "size": entry["size"],
                "active": counts,
                "retention": [_rate(n, entry["size"]) for n in counts],
            }
        )
    return result


def purchase_kpis(db: Any, *, until: str, year_ago: str, two_years_ago: str) -> dict[str, Any]:
    customers, repeat, orders, revenue = sql.purchases(db, since="", until=until)
    year_customers, _, year_orders, _ = sql.purchases(db, since=year_ago, until=until)
    base, kept = sql.retained(db, before=(two_years_ago, year_ago), after=(year_ago, until))
    retention = _rate(kept, base)
    aov = _rate(revenue, orders, 2)
    yearly_purchases = _rate(year_orders, year_customers)
    clv = None
    if base and kept < base and orders and year_customers:
        lifespan = 1 / (1 - kept / base)
        clv = round(revenue / orders * year_orders / year_customers * lifespan, 2)
    return {
        "customers": customers,
        "repeat_customers": repeat,
        "repeat_purchase_rate": _rate(repeat, customers),
        "orders": orders,
        "revenue": round(revenue, 2),
        "average_order_value": aov,
        "yearly_retention": retention,
        "yearly_purchases_per_customer": yearly_purchases,
        "clv": clv,
        "by_month": [
            {
                "month": month,
                "orders": n,
                "revenue": round(value, 2),
                "average_order_value": _rate(value, n, 2),
            }
            for month, n, value in sql.monthly_orders(db, until=until)
        ],
    }


def predictive_summary(db: Any) -> dict[str, Any]:
    customers, total = sql.predicted_clv_total(db)
    stored = sql.load_models(db)
    return {
        "bgnbd": stored["bgnbd"]["params"] if "bgnbd" in stored else None,
        "gamma_gamma": stored["gamma_gamma"]["params"] if "gamma_gamma" in stored else None,
        "calibration_end": stored.get("bgnbd", {}).get("calibration_end"),
        "customers": customers,
        "predicted_clv_total": round(total, 2),
        "predicted_clv_mean": _rate(total, customers, 2),
        "predicted_clv_histogram": [
            {"from": round(low, 2), "to": round(high, 2), "customers": n}
            for low, high, n in sql.predicted_clv_histogram(db, bins=20)
        ],
    }
