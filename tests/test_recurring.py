"""Recurring moments: yearly and monthly triggers on a date fact, driven by a virtual clock."""

from __future__ import annotations

import calendar
import json
import tempfile
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clm_engine import Engine, VirtualClock
from clm_engine.cli import cli
from clm_engine.recurring import Moment, Period, base_date
from tests.helpers import event, store_in


def write_rules(tmp_path: Path, *rules: dict, name: str = "moments", version: int = 1) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"ruleset": name, "version": version, "rules": list(rules)}))
    return path


def birthday_rule(**when: object) -> dict:
    trigger = {"every": "P1Y", "on": "contact.attributes.birthday", "at": "09:00", **when}
    return {
        "id": "birthday",
        "when": trigger,
        "then": [{"action": "tag.add", "with": {"tag": "b"}}],
    }


def fired(engine: Engine, contact_id: str) -> list[str]:
    """The fire times of the rule's decisions for a contact, oldest first."""
    return sorted(t.at[:16] for t in engine.store.traces(contact_id, limit=10_000))


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(datetime(2026, 11, 2, 8, 0, tzinfo=UTC))


# -- the calendar ------------------------------------------------------------------------------

YEARLY = Moment(Period(12), time(9), "Europe/Paris")


def test_29_february_falls_on_28_february_in_other_years_and_never_drifts():
    base = date(1992, 2, 29)
    days = [YEARLY.occurrence(base, year - 1992) for year in (2027, 2028, 2029)]
    assert days == [date(2027, 2, 28), date(2028, 2, 29), date(2029, 2, 28)]
    march = Moment(Period(12), time(9), "UTC", leap_day="mar1")
    assert march.occurrence(base, 35) == date(2027, 3, 1)
    assert march.index_of(base, date(2027, 3, 1)) == 35
    assert march.index_of(base, date(2028, 2, 29)) == 36


def test_a_monthly_moment_on_the_31st_takes_the_last_day_of_shorter_months():
    monthly = Moment(Period(1), time(9), "UTC")
    base = date(2026, 1, 31)
    days = [monthly.occurrence(base, i) for i in range(1, 5)]
    assert days == [date(2026, 2, 28), date(2026, 3, 31), date(2026, 4, 30), date(2026, 5, 31)]
    assert monthly.index_of(base, date(2026, 4, 30)) == 3
    assert monthly.index_of(base, date(2026, 1, 31)) is None  # the date itself is no occurrence


def test_the_time_of_day_is_local_and_a_skipped_time_fires_after_the_gap():
    assert YEARLY.fire_at(date(2027, 1, 14)) == datetime(2027, 1, 14, 8, tzinfo=UTC)
    assert YEARLY.fire_at(date(2027, 7, 14)) == datetime(2027, 7, 14, 7, tzinfo=UTC)
    night = Moment(Period(12), time(2, 30), "Europe/Paris")
    # 28 March 2027: Paris skips 02:00-03:00. 02:30 fires at 03:30 local (01:30Z).
    fire = night.fire_at(date(2027, 3, 28))
    assert fire == datetime(2027, 3, 28, 1, 30, tzinfo=UTC)
    assert fire.astimezone(ZoneInfo("Europe/Paris")).strftime("%H:%M") == "03:30"
    # 31 October 2027: 02:30 happens twice; the first (still +02:00) is the one.
    assert night.fire_at(date(2027, 10, 31)) == datetime(2027, 10, 31, 0, 30, tzinfo=UTC)


def test_far_dates_have_no_occurrence_outside_the_supported_times_and_never_overflow():
    assert YEARLY.next_after(date(9999, 12, 31), datetime(2026, 1, 1, tzinfo=UTC)) is None
    assert YEARLY.next_after(date(2199, 6, 1), datetime(2026, 1, 1, tzinfo=UTC)) is None
    old = YEARLY.next_after(date(1850, 6, 1), datetime(2026, 7, 1, tzinfo=UTC))
    assert old is not None and old[0] == date(2027, 6, 1)
    monthly = Moment(Period(1), time(23, 59), "Pacific/Kiritimati")
    last = monthly.next_after(date(1900, 1, 31), datetime(2199, 12, 1, tzinfo=UTC))
    assert last == (date(2199, 12, 31), datetime(2199, 12, 31, 9, 59, tzinfo=UTC))
    assert monthly.next_after(date(1900, 1, 31), datetime(2199, 12, 31, 12, tzinfo=UTC)) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1990-03-14", date(1990, 3, 14)),
        ("--02-29", date(2000, 2, 29)),
        ("2026-03-14T23:30:00Z", date(2026, 3, 15)),  # a time: its date in Paris
        ("1990-02-30", None),
        ("--13-01", None),
        ("not a date", None),
        (12, None),
        ("", None),
    ],
)
def test_the_date_a_value_names(value, expected):
    assert base_date(value, "Europe/Paris") == expected


# -- the engine ----------------------------------------------------------------------------------


def test_a_birthday_fires_once_a_year_at_nine_in_the_contacts_timezone(on_store, tmp_path, clock):
    rules = [write_rules(tmp_path, birthday_rule())]
    engine = Engine(store_in(tmp_path), clock=clock, rulesets=rules)
    engine.ingest(
        event("c1", "signup", "2026-11-02T08:00:00Z", birthday="1990-03-14", timezone="Asia/Tokyo")
    )
    clock.set(datetime(2027, 3, 13, 23, 59, tzinfo=UTC))  # 08:59 in Tokyo on the 14th
    assert engine.tick().anchors_fired == 0
    clock.advance(minutes=1)
    assert engine.tick().anchors_fired == 1
    assert engine.tick().anchors_fired == 0  # once per occurrence
    assert engine.contact("c1").tags == ["b"]
    engine.close()
    clock.set(datetime(2029, 6, 1, tzinfo=UTC))  # down over two birthdays: each runs once
    engine = Engine(store_in(tmp_path), clock=clock, rulesets=rules)
    assert engine.tick().anchors_fired == 2
    assert fired(engine, "c1") == ["2027-03-14T00:00", "2028-03-14T00:00", "2029-03-14T00:00"]
    [(_, _, fire_at, status, _)] = engine.store.anchors_of("c1", "moments", "birthday")
    assert (fire_at[:16], status) == ("2030-03-14T00:00", "pending")


def test_explain_shows_the_next_occurrence_in_local_time(tmp_path, clock):
    rules = write_rules(tmp_path, birthday_rule())
    db = tmp_path / "clm.db"
    with Engine(db, clock=clock, rulesets=[rules]) as engine:
        engine.ingest(
            event(
                "c1",
                "signup",
                "2026-11-02T08:00:00Z",
                birthday="1990-03-14",
                timezone="Europe/Paris",
            )
        )
    result = CliRunner().invoke(cli, ["explain", "c1", "--db", str(db), "--rulesets", str(rules)])
    assert result.exit_code == 0, result.output
    assert "next 2027-03-14 09:00 Europe/Paris" in result.output
    answer = CliRunner().invoke(
        cli, ["explain", "c1", "--db", str(db), "--rulesets", str(rules), "--json"]
    )
    [entry] = json.loads(answer.output)["rules"]
    assert entry["next"] == "next 2027-03-14 09:00 Europe/Paris"


def test_a_changed_date_moves_the_next_occurrence_and_a_removed_one_cancels_it(
    on_store, tmp_path, clock
):
    engine = Engine(
        store_in(tmp_path), clock=clock, rulesets=[write_rules(tmp_path, birthday_rule())]
    )
    engine.ingest(event("c1", "signup", "2026-11-02", birthday="1990-03-14"))
    engine.ingest(event("c1", "contact.updated", "2026-11-03", birthday="1990-01-05"))
    [(_, anchor_at, _, _, _)] = engine.store.anchors_of("c1", "moments", "birthday")
    assert anchor_at[:10] == "2027-01-05"
    engine.ingest(event("c1", "contact.updated", "2026-11-04", timezone="America/New_York"))
    [(_, _, fire_at, _, _)] = engine.store.anchors_of("c1", "moments", "birthday")
    assert fire_at[:16] == "2027-01-05T14:00"  # 09:00 in New York
    engine.ingest(event("c1", "contact.updated", "2026-11-05", birthday=None))
    clock.set(datetime(2028, 1, 1, tzinfo=UTC))
    assert engine.tick().anchors_fired == 0
    assert engine.store.anchors_of("c1", "moments", "birthday") == []


def test_an_invalid_or_far_date_schedules_nothing(on_store, tmp_path, clock):
    engine = Engine(
        store_in(tmp_path), clock=clock, rulesets=[write_rules(tmp_path, birthday_rule())]
    )
    engine.ingest(event("bad", "signup", "2026-11-02", birthday="1990-02-30"))
    engine.ingest(event("never", "signup", "2026-11-02", birthday="9999-12-31"))
    engine.ingest(event("text", "signup", "2026-11-02", birthday="soon"))
    for contact in ("bad", "never", "text"):
        assert engine.store.anchors_of(contact, "moments", "birthday") == []
    clock.set(datetime(2030, 1, 1, tzinfo=UTC))
    assert engine.tick().anchors_fired == 0


def test_a_rule_loaded_later_starts_now_and_does_not_replay_past_anniversaries(tmp_path, clock):
    db = tmp_path / "clm.db"
    with Engine(db, clock=clock) as engine:
        engine.ingest(event("c1", "signup", "2020-01-01T00:00:00Z", birthday="1990-03-14"))
    clock.set(datetime(2027, 6, 1, tzinfo=UTC))
    engine = Engine(
        db, clock=clock, rulesets=[write_rules(tmp_path, birthday_rule(timezone="UTC"))]
    )
    assert engine.tick().anchors_fired == 0
    [(_, anchor_at, _, _, _)] = engine.store.anchors_of("c1", "moments", "birthday")
    assert anchor_at[:10] == "2028-03-14"


def test_stale_occurrences_after_downtime_are_skipped_and_the_next_one_stays(tmp_path, clock):
    rules = [write_rules(tmp_path, birthday_rule(timezone="UTC", stale_after="P2D"))]
    engine = Engine(tmp_path / "clm.db", clock=clock, rulesets=rules)
    engine.ingest(event("c1", "signup", "2026-11-02", birthday="1990-03-14"))
    clock.set(datetime(2028, 3, 15, tzinfo=UTC))
    report = engine.tick()
    assert (report.anchors_skipped, report.anchors_fired) == (1, 1)  # 2027 stale, 2028 on time
    [(_, anchor_at, _, status, _)] = engine.store.anchors_of("c1", "moments", "birthday")
    assert (anchor_at[:10], status) == ("2029-03-14", "pending")


def test_signup_anniversaries_count_from_the_local_date_of_the_signup(tmp_path, clock):
    rule = {
        "id": "anniversary",
        "when": {"every": "P1Y", "on": "contact.created_at", "at": "10:00"},
        "then": [{"action": "tag.add", "with": {"tag": "a"}}],
    }
    engine = Engine(tmp_path / "clm.db", clock=clock, rulesets=[write_rules(tmp_path, rule)])
    clock.set(datetime(2026, 11, 2, 23, 30, tzinfo=UTC))  # already 3 November in Paris
    engine.ingest(event("c1", "signup", "2026-11-02T23:30:00Z", timezone="Europe/Paris"))
    [(_, anchor_at, fire_at, _, _)] = engine.store.anchors_of("c1", "moments", "anniversary")
    assert (anchor_at[:10], fire_at[:16]) == ("2027-11-03", "2027-11-03T09:00")


# -- validation ----------------------------------------------------------------------------------


def test_calendar_durations_where_a_fixed_one_is_needed_say_what_to_write(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(
        '{"ruleset": "r", "version": 1, "rules": [\n'
        ' {"id": "a", "when": {"event": "purchase"}, "limit": {"cooldown": "P1Y"},\n'
        '  "then": [{"action": "tag.add", "with": {"tag": "x"}}]},\n'
        ' {"id": "b", "when": {"every": "P30D", "on": "contact.created_at"},\n'
        '  "then": [{"action": "tag.add", "with": {"tag": "x"}}]}\n'
        "]}\n"
    )
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code != 0
    assert f"{path}:2:" in result.output and "/rules/0/limit/cooldown: 'P1Y'" in result.output
    assert "write 'P365D'" in result.output and '{"every": "P1Y"' in result.output
    assert f"{path}:4:" in result.output and "/rules/1/when/every: 'P30D'" in result.output
    assert "write 'P1Y' (yearly) or 'P1M'" in result.output


def test_a_recurring_trigger_needs_a_date_fact_and_a_known_timezone(tmp_path):
    path = write_rules(
        tmp_path,
        {
            "id": "x",
            "when": {"every": "P1M", "on": "contact.stage", "timezone": "Europe/Pariss"},
            "then": [{"action": "tag.add", "with": {"tag": "x"}}],
        },
    )
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert "/rules/0/when/on: 'contact.stage' is not a date" in result.output
    assert "did you mean 'Europe/Paris'?" in result.output


# -- the property: what fires over a long run is what the calendar says -------------------------

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
START = datetime(2026, 1, 1, tzinfo=UTC)


def expected_fires(base: date, months: int, at: time, zone: str, since: datetime, until: datetime):
    """Written out from the documented rules, independently of clm_engine.recurring."""
    out = []
    for index in range(1, 200 * 12 // months + 2):
        total = base.month - 1 + index * months
        year, month = base.year + total // 12, total % 12 + 1
        day = min(base.day, calendar.monthrange(year, month)[1])
        fire = datetime.combine(date(year, month, day), at, tzinfo=ZoneInfo(zone)).astimezone(UTC)
        if fire > until:
            break
        if fire >= since:
            out.append(fire.strftime("%Y-%m-%dT%H:%M"))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    contacts=st.lists(
        st.tuples(
            st.dates(date(1950, 1, 1), date(2027, 12, 31)) | st.just(date(1992, 2, 29)),
            st.sampled_from(ZONES),
        ),
        min_size=1,
        max_size=4,
    ),
    months=st.sampled_from([12, 1, 3]),
    at=st.sampled_from([time(9), time(2, 30), time(0, 0), time(23, 45)]),
    pumps=st.lists(st.integers(1, 24 * 50), min_size=1, max_size=40),
    restarts=st.sets(st.integers(0, 39), max_size=4),
)
def test_the_occurrences_fired_are_those_the_calendar_gives_whatever_the_pumps(
    contacts, months, at, pumps, restarts
):
    every = f"P{months // 12}Y" if months % 12 == 0 else f"P{months}M"
    rule = birthday_rule(every=every, at=at.strftime("%H:%M"))
    with tempfile.TemporaryDirectory() as folder:
        rules = [write_rules(Path(folder), rule)]
        clock = VirtualClock(START)
        engine = Engine(Path(folder) / "clm.db", clock=clock, rulesets=rules)
        for number, (birthday, zone) in enumerate(contacts):
            engine.ingest(
                event(
                    f"c{number}",
                    "signup",
                    "2026-01-01T00:00:00Z",
                    birthday=birthday.isoformat(),
                    timezone=zone,
                )
            )
        stretch = max(1, 24 * 400 // sum(pumps))  # the pumps spread over a year or more
        for step, length in enumerate(pumps):
            clock.advance(hours=length * stretch)
            if step in restarts:
                engine.close()
                engine = Engine(Path(folder) / "clm.db", clock=clock, rulesets=rules)
            engine.tick()
        clock.set(max(clock.now(), START + timedelta(days=400)))
        engine.tick()
        for number, (birthday, zone) in enumerate(contacts):
            want = expected_fires(birthday, months, at, zone, START, clock.now())
            assert fired(engine, f"c{number}") == want
        engine.close()


def test_calendar_durations_in_conditions_say_how_many_days_to_write(tmp_path):
    within = {"type": "purchase", "within": "P1M"}
    rule = {
        "id": "a",
        "when": {"event": "purchase"},
        "if": {
            "all": [
                {"fact": "events.count", "args": within, "op": "gt", "value": 1},
                {"fact": "contact.created_at", "op": "within_last", "value": "P1Y"},
            ]
        },
        "then": [{"action": "tag.add", "with": {"tag": "x"}}],
    }
    result = CliRunner().invoke(cli, ["validate", str(write_rules(tmp_path, rule))])
    assert "/rules/0/if/all/0/args: events.count: 'P1M'" in result.output
    assert "months and years vary in length, write 'P30D'" in result.output
    assert "/rules/0/if/all/1/value: within_last 'P1Y'" in result.output
    assert "write 'P365D'" in result.output
