"""When steps fall due, quiet hours and frequency caps: the time arithmetic on its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from clm_email.policy import cap_until, next_allowed, quiet_until
from clm_email.sequences import Step, next_time

from clm_engine.channels import FrequencyCap, QuietHours


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_step_goes_at_a_time_of_day_on_the_day_its_wait_ends():
    step = Step(id="tips", template="t", after="P2D", at="10:00")
    # Day 2 at 10:00 in New York (EST, UTC-5), whether the previous step ran at 11:00 ...
    assert next_time(utc("2026-11-02T16:00:00"), step, "America/New_York") == utc(
        "2026-11-04T15:00:00"
    )
    # ... or at 08:00 local.
    assert next_time(utc("2026-11-02T13:00:00"), step, "America/New_York") == utc(
        "2026-11-04T15:00:00"
    )
    # In Tokyo 11-04 16:00 UTC is already 11-05: day 2 there is the 5th.
    assert next_time(utc("2026-11-02T16:00:00"), step, "Asia/Tokyo") == utc("2026-11-05T01:00:00")
    # No wait and a time already gone today: tomorrow.
    soon = Step(id="x", template="t", at="10:00")
    assert next_time(utc("2026-11-02T12:00:00"), soon, "UTC") == utc("2026-11-03T10:00:00")
    assert next_time(utc("2026-11-02T09:00:00"), soon, "UTC") == utc("2026-11-02T10:00:00")
    assert next_time(utc("2026-11-02T15:00:00"), Step(id="x", template="t"), "UTC") == utc(
        "2026-11-02T15:00:00"
    )


def test_a_time_of_day_stays_on_the_wall_clock_across_daylight_saving():
    step = Step(id="tips", template="t", after="P1D", at="10:00")
    # Paris leaves summer time on 2026-10-25: 10:00 is 08:00 UTC before, 09:00 UTC after.
    assert next_time(utc("2026-10-23T12:00:00"), step, "Europe/Paris") == utc("2026-10-24T08:00:00")
    assert next_time(utc("2026-10-24T12:00:00"), step, "Europe/Paris") == utc("2026-10-25T09:00:00")


QUIET = QuietHours(start="21:00", end="08:00")


def test_quiet_hours_across_midnight_end_at_the_local_morning():
    assert quiet_until(utc("2026-11-02T12:00:00"), QUIET, "Europe/Paris") is None
    # 22:30 in Paris (21:30 UTC): quiet until 08:00 Paris = 07:00 UTC next day.
    assert quiet_until(utc("2026-11-02T21:30:00"), QUIET, "Europe/Paris") == utc(
        "2026-11-03T07:00:00"
    )
    # 06:00 in Paris: quiet until 08:00 the same day.
    assert quiet_until(utc("2026-11-03T05:00:00"), QUIET, "Europe/Paris") == utc(
        "2026-11-03T07:00:00"
    )
    daytime = QuietHours(start="12:00", end="14:00")
    assert quiet_until(utc("2026-11-02T12:30:00"), daytime, "UTC") == utc("2026-11-02T14:00:00")


def test_a_cap_clears_when_the_oldest_counted_send_leaves_the_window():
    cap = FrequencyCap(max=2, per="P7D")
    now = utc("2026-11-10T12:00:00")
    assert cap_until(now, [utc("2026-11-09T10:00:00")], cap) is None
    sends = [utc("2026-11-01T09:00:00"), utc("2026-11-05T10:00:00"), utc("2026-11-09T10:00:00")]
    # In the window: 11-05 and 11-09; the older of the two leaves it on 11-12 10:00.
    assert cap_until(now, sends, cap) == utc("2026-11-12T10:00:00")


def test_caps_and_quiet_hours_combine_into_the_first_allowed_moment():
    cap = FrequencyCap(max=1, per="P1D")
    now = utc("2026-11-10T12:00:00")
    # The cap clears at 23:00 UTC, which is quiet in UTC until 08:00 the next day.
    decision = next_allowed(
        now, sends=[utc("2026-11-09T23:00:00")], caps=[cap], quiet=QUIET, timezone="UTC"
    )
    assert decision.until == utc("2026-11-11T08:00:00")
    assert decision.reason == "frequency cap: 1 emails per 1 days; quiet hours 21:00-08:00 (UTC)"
    assert next_allowed(now, sends=[], caps=[cap], quiet=QUIET, timezone="UTC") is None
    later = now + timedelta(hours=10)  # 22:00 UTC
    assert next_allowed(later, sends=[], caps=[], quiet=QUIET, timezone="UTC").until == utc(
        "2026-11-11T08:00:00"
    )
