"""``refresh``: fit the predictive models, predict every customer, score RFM, and record each
change of segment as an ``rfm.segment_changed`` event. What ``clm analytics refresh`` runs,
daily or from a sweep.

Everything is computed over *complete* UTC days: a refresh at any time on 1 October uses the
purchases up to and including 30 September (the calibration end). Purchases on one day are one
transaction (the convention of the CDNOW data the models are checked against).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..models import utc_text
from ..store import analytics as sql
from ..store.analytics_dialect import analytics_db
from .definitions import Definitions, load_definitions
from .predictive import (
    BGNBD,
    FitError,
    GammaGamma,
    bgnbd_log_likelihood,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_log_likelihood,
    predicted_clv,
)

if TYPE_CHECKING:
    from ..engine import Engine

#: The CLV horizon and discount of predictions (the ``clv`` row of ``analytics_models``).
CLV_MONTHS = 12
MONTHLY_DISCOUNT = 0.01
#: The type of the event a change of RFM segment is recorded as.
SEGMENT_CHANGED = "rfm.segment_changed"


@dataclass
class Summary:
    """Per-customer purchase history as the models take it (time in weeks)."""

    ids: list[str]
    first_days: list[str]
    last_days: list[str]
    x: np.ndarray[Any, np.dtype[np.float64]]
    t_x: np.ndarray[Any, np.dtype[np.float64]]
    T: np.ndarray[Any, np.dtype[np.float64]]
    m: np.ndarray[Any, np.dtype[np.float64]]


@dataclass
class RefreshResult:
    calibration_end: str
    customers: int = 0
    bgnbd: dict[str, float] | None = None
    gamma_gamma: dict[str, float] | None = None
    problems: list[str] = field(default_factory=list)
    segments: dict[str, int] = field(default_factory=dict)
    segment_changes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def calibration_end(now: datetime) -> date:
    """The last complete UTC day before ``now``."""
    return now.astimezone(UTC).date() - timedelta(days=1)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def purchase_summary(db: Any, end: date) -> Summary:
    """The models' data, through ``end`` (inclusive), from the store."""
    rows = sql.purchase_summary(
        db, until=utc_text(_day_start(end + timedelta(days=1))), end_day=end.isoformat()
    )
    columns = list(zip(*rows, strict=True)) if rows else [()] * 7
    return Summary(
        ids=list(columns[0]),
        first_days=list(columns[1]),
        last_days=list(columns[2]),
        x=np.asarray(columns[3], dtype=np.float64),
        t_x=np.asarray(columns[4], dtype=np.float64),
        T=np.asarray(columns[5], dtype=np.float64),
        m=np.asarray(columns[6], dtype=np.float64),
    )


def fit_models(db: Any, end: date) -> tuple[Summary, BGNBD, GammaGamma]:
    """Fit BG/NBD and Gamma-Gamma on the purchases through ``end``; :class:`FitError` if the
    history cannot support them."""
    data = purchase_summary(db, end)
    bgnbd = fit_bgnbd(data.x, data.t_x, data.T)
    gamma_gamma = fit_gamma_gamma(data.x, data.m)
    return data, bgnbd, gamma_gamma


def refresh(
    engine: Engine,
    *,
    now: datetime | None = None,
    definitions: Definitions | str | Path | None = None,
    record_changes: bool = True,
) -> RefreshResult:
    """Refit the models, predict every customer and score RFM, as of ``now`` (the engine's
    clock without it); then ingest one ``rfm.segment_changed`` event per customer whose
    segment changed (the first scoring included), so rules can trigger on it."""
    moment = now or engine.clock.now()
    end = calibration_end(moment)
    rules = definitions if isinstance(definitions, Definitions) else load_definitions(definitions)
    result = RefreshResult(calibration_end=end.isoformat())
    at = utc_text(engine.clock.now())
    with engine.store.write() as tx:
        db = analytics_db(tx)
        try:
            data, bgnbd, gamma_gamma = fit_models(db, end)
        except FitError as error:
            result.problems.append(str(error))
        else:
            result.customers = len(data.ids)
            result.bgnbd, result.gamma_gamma = bgnbd.as_dict(), gamma_gamma.as_dict()
            _save(db, data, bgnbd, gamma_gamma, end, at)
        until = utc_text(_day_start(end + timedelta(days=1)))
        window_start = utc_text(_day_start(end + timedelta(days=1)) - rules.window_length)
        changes = sql.refresh_rfm(
            db,
            until=until,
            as_of=end.isoformat(),
            window_start=window_start,
            segments=rules.rows(),
            otherwise=rules.otherwise,
        )
        result.segments = sql.rfm_segments(db)
    result.segment_changes = len(changes)
    if record_changes and changes:
        occurred = utc_text(moment)
        events = [
            {
                "id": _event_id(contact_id, end, new),
                "contact_id": contact_id,
                "type": SEGMENT_CHANGED,
                "occurred_at": occurred,
                "properties": {"from": old, "to": new, "r": r, "f": f, "m": m},
            }
            for contact_id, old, new, r, f, m in changes
        ]
        for start in range(0, len(events), 2000):
            engine.ingest_many(events[start : start + 2000])
    return result


def _event_id(contact_id: str, end: date, segment: str) -> str:
    """The engine's own event id shape (``a-`` and 32 hex digits, see
    ``clm_engine.builtins.reducers.is_emitted``): a segment change is the engine's doing, so it
    does not make a contact look active; derived from what it records, so a refresh run twice
    records it once."""
    key = f"rfm#{contact_id}#{end.isoformat()}#{segment}"
    return "a-" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _save(
    db: Any, data: Summary, bgnbd: BGNBD, gamma_gamma: GammaGamma, end: date, at: str
) -> None:
    repeat = data.x > 0
    sql.save_model(
        db,
        "bgnbd",
        bgnbd.as_dict(),
        log_likelihood=bgnbd_log_likelihood(
            np.asarray([bgnbd.r, bgnbd.alpha, bgnbd.a, bgnbd.b]), data.x, data.t_x, data.T
        ),
        calibration_end=end.isoformat(),
        customers=len(data.ids),
        at=at,
    )
    sql.save_model(
        db,
        "gamma_gamma",
        gamma_gamma.as_dict(),
        log_likelihood=gamma_gamma_log_likelihood(
            np.asarray([gamma_gamma.p, gamma_gamma.q, gamma_gamma.gamma]),
            data.x[repeat & (data.m > 0)],
            data.m[repeat & (data.m > 0)],
        ),
        calibration_end=end.isoformat(),
        customers=int(np.sum(repeat)),
        at=at,
    )
    sql.save_model(
        db,
        "clv",
        {"months": CLV_MONTHS, "monthly_discount": MONTHLY_DISCOUNT},
        log_likelihood=None,
        calibration_end=end.isoformat(),
        customers=len(data.ids),
        at=at,
    )
    alive = bgnbd.p_alive(data.x, data.t_x, data.T)
    expected = bgnbd.expected_purchases(52.0, data.x, data.t_x, data.T)
    value = gamma_gamma.expected_value(data.x, data.m)
    clv = predicted_clv(
        bgnbd,
        gamma_gamma,
        data.x,
        data.t_x,
        data.T,
        data.m,
        months=CLV_MONTHS,
        monthly_discount=MONTHLY_DISCOUNT,
    )
    as_of = end.isoformat()
    sql.replace_customers(
        db,
        (
            (
                data.ids[i],
                data.first_days[i],
                data.last_days[i],
                int(data.x[i]),
                round(float(data.m[i]), 6),
                round(float(alive[i]), 6),
                round(float(expected[i]), 6),
                round(float(value[i]), 4),
                round(float(clv[i]), 4),
                as_of,
            )
            for i in range(len(data.ids))
        ),
    )


def models(db: Any) -> tuple[BGNBD | None, GammaGamma | None, dict[str, Any]]:
    """The fitted models in the store (None where not fitted) and the CLV settings."""
    stored = sql.load_models(db)
    bgnbd = BGNBD(**stored["bgnbd"]["params"]) if "bgnbd" in stored else None
    gamma_gamma = GammaGamma(**stored["gamma_gamma"]["params"]) if "gamma_gamma" in stored else None
    clv = stored.get("clv", {}).get("params", {"months": CLV_MONTHS})
    return bgnbd, gamma_gamma, clv
