"""Predictive CLV end to end: the CDNOW sample ingested as purchase events, the calibration
summary computed by the store, BG/NBD and Gamma-Gamma fitted, against the published values."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from clm_engine import Engine, VirtualClock
from clm_engine.analytics import fit_models, refresh
from clm_engine.analytics.sweep import calibration_end

CDNOW = Path(__file__).parent / "data" / "cdnow" / "CDNOW_sample.txt"

#: Fader, Hardie & Lee (2005), "Counting your customers the easy way" (BG/NBD) and
#: "RFM and CLV: using iso-value curves for customer base analysis" (Gamma-Gamma).
PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "gamma": 15.44}

#: A refresh at any time on 1 October 1997 calibrates through 30 September: 39 weeks.
REFRESHED_AT = datetime(1997, 10, 1, 6, 0, tzinfo=UTC)


def cdnow_events() -> list[dict[str, object]]:
    events = []
    for n, line in enumerate(CDNOW.read_text().splitlines()):
        _, customer, day, cds, dollars = line.split()
        events.append(
            {
                "id": f"cdnow-{n}",
                "contact_id": f"cdnow-{int(customer):04d}",
                "type": "purchase",
                "occurred_at": f"{day[:4]}-{day[4:6]}-{day[6:]}T12:00:00Z",
                "properties": {"amount": float(dollars), "items": int(cds)},
            }
        )
    return events


@pytest.fixture(scope="module")
def cdnow_engine(tmp_path_factory):
    path = tmp_path_factory.mktemp("cdnow") / "clm.db"
    clock = VirtualClock(REFRESHED_AT)
    with Engine(path, clock=clock) as engine:
        result = engine.ingest_many(cdnow_events())
        assert (result.ingested, result.rejected, result.failed) == (6919, [], [])
        yield engine


def test_cdnow_fit_matches_published(cdnow_engine):
    end = calibration_end(REFRESHED_AT)
    assert end.isoformat() == "1997-09-30"
    data, bgnbd, gamma_gamma = fit_models(cdnow_engine.store.db, end)
    assert len(data.ids) == 2357
    assert int(data.x.sum()) == 2457  # repeat transactions in calibration (the paper's total)
    for name, published in PUBLISHED_BGNBD.items():
        assert getattr(bgnbd, name) == pytest.approx(published, abs=0.02), name
    for name, published in PUBLISHED_GAMMA_GAMMA.items():
        assert getattr(gamma_gamma, name) == pytest.approx(published, abs=0.02), name


RULES = {
    "ruleset": "analytics-rules",
    "version": 1,
    "rules": [
        {
            "id": "became-champion",
            "when": {
                "event": "rfm.segment_changed",
                "where": {"fact": "event.properties.to", "op": "eq", "value": "champion"},
            },
            "if": {"fact": "contact.rfm.segment", "op": "eq", "value": "champion"},
            "then": [{"action": "tag.add", "with": {"tag": "champion"}}],
        },
        {
            "id": "valuable-and-leaving",
            "when": {"event": "rfm.segment_changed"},
            "if": {
                "all": [
                    {"fact": "contact.p_alive", "op": "lt", "value": 0.3},
                    {"fact": "contact.predicted_clv", "op": "gt", "value": 5},
                ]
            },
            "then": [{"action": "tag.add", "with": {"tag": "win-back"}}],
        },
    ],
}


def test_refresh_stores_predictions_and_rules_use_them(cdnow_engine, tmp_path):
    import json

    from clm_engine.analytics.predictive import BGNBD, GammaGamma, predicted_clv

    rules = tmp_path / "analytics-rules.json"
    rules.write_text(json.dumps(RULES))
    cdnow_engine.load_rulesets([rules])
    result = refresh(cdnow_engine, now=REFRESHED_AT)
    assert result.customers == 2357 and result.problems == []
    assert result.bgnbd is not None and result.bgnbd["r"] == pytest.approx(0.243, abs=0.02)
    assert sum(result.segments.values()) == 2357
    assert result.segment_changes == 2357  # the first scoring records every customer's segment

    db = cdnow_engine.store.db
    # Customer 1: two repeat purchases, the last 30.43 weeks in, 38.86 weeks observed, $22.35.
    row = db.execute(
        "SELECT x, repeat_mean, p_alive, predicted_clv FROM analytics_customers "
        "WHERE contact_id = 'cdnow-0001'"
    ).fetchone()
    bgnbd, gamma_gamma = BGNBD(**result.bgnbd), GammaGamma(**result.gamma_gamma)
    assert row[0] == 2 and row[1] == pytest.approx(22.345)
    assert row[2] == pytest.approx(float(bgnbd.p_alive(2, 213 / 7, 272 / 7)), abs=1e-5)
    clv = predicted_clv(bgnbd, gamma_gamma, 2, 213 / 7, 272 / 7, 22.345)
    assert row[3] == pytest.approx(float(clv), abs=1e-3)

    champions = {
        contact_id
        for (contact_id,) in db.execute(
            "SELECT contact_id FROM analytics_rfm WHERE segment = 'champion'"
        ).fetchall()
    }
    assert champions
    tagged = {c.id for c in cdnow_engine.store.iter_contacts() if "champion" in c.tags}
    assert tagged == champions
    win_back = [c for c in cdnow_engine.store.iter_contacts() if "win-back" in c.tags]
    assert win_back
    for contact in win_back[:20]:
        stored = db.execute(
            "SELECT p_alive, predicted_clv FROM analytics_customers WHERE contact_id = ?",
            [contact.id],
        ).fetchone()
        assert stored[0] < 0.3 and stored[1] > 5

    again = refresh(cdnow_engine, now=REFRESHED_AT)
    assert again.segment_changes == 0  # nothing changed, nothing recorded
