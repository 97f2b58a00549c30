"""Schedule expressions: parsing and ``next_run`` with fixed instants (rate, cron's six fields with ``?``, ``L``,
``W``, ``#``, names and years, at()), in UTC and across daylight-saving changes."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfless.services.scheduler import expressions as ex
from selfless.services.scheduler.service import next_due

UTC = dt.UTC
NY = ex.zone("America/New_York")
BERLIN = ex.zone("Europe/Berlin")


def t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def runs(expr: str, after: str, n: int, tz: str = "UTC") -> list[str]:
    """The next ``n`` runs after ``after``, as UTC ISO text."""
    parsed = ex.parse(expr)
    assert isinstance(parsed, ex.Cron)
    zone, out, at = ex.zone(tz), [], t(after)
    for _ in range(n):
        found = parsed.next_run(at, zone)
        assert found is not None
        out.append(found.strftime("%Y-%m-%dT%H:%M"))
        at = found
    return out


@pytest.mark.parametrize(
    "text",
    [
        "rate(1 minutes)",
        "rate(2 minute)",
        "rate(0 minutes)",
        "rate(5 weeks)",
        "cron(0 12 * * * *)",  # neither day field is '?'
        "cron(0 12 ? * ? *)",  # both are
        "cron(0 12 * * ?)",  # five fields
        "cron(60 12 * * ? *)",
        "cron(0 24 * * ? *)",
        "cron(0 12 32 * ? *)",
        "cron(0 12 ? * 8 *)",
        "cron(0 12 ? FOO * *)",
        "cron(0 12 ? * 2#6 *)",
        "cron(0 12 * * ? 2200)",
        "cron(5-1 * * * ? *)",
        "at(2026-02-30T10:00:00)",
        "at(2026-01-01 10:00:00)",
        "every 5 minutes",
    ],
)
def test_invalid_expressions_are_refused(text: str) -> None:
    with pytest.raises(ex.InvalidExpression, match="Invalid Schedule Expression"):
        ex.parse(text)


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ex.InvalidExpression, match="Mars/Olympus"):
        ex.zone("Mars/Olympus")


def test_rate_counts_from_its_anchor() -> None:
    rate = ex.parse("rate(5 minutes)")
    assert rate == ex.Rate(300)
    anchor = t("2026-03-01T10:00:00+00:00")
    assert rate.next_run(anchor, anchor) == t("2026-03-01T10:05:00+00:00")
    assert rate.next_run(t("2026-03-01T10:07:30+00:00"), anchor) == t("2026-03-01T10:10:00+00:00")
    assert rate.next_run(t("2026-03-01T09:00:00+00:00"), anchor) == anchor
    assert ex.parse("rate(1 hour)") == ex.Rate(3600)
    assert ex.parse("rate(1 day)") == ex.Rate(86400)
    assert ex.parse("rate(3 days)") == ex.Rate(3 * 86400)


def test_cron_basic_fields() -> None:
    assert runs("cron(0/15 * * * ? *)", "2026-05-01T10:07:00+00:00", 3) == [
        "2026-05-01T10:15",
        "2026-05-01T10:30",
        "2026-05-01T10:45",
    ]
    # Weekdays at 08:30 and 17:30 (MON-FRI by name), from a Friday evening.
    assert runs("cron(30 8,17 ? * MON-FRI *)", "2026-05-01T18:00:00+00:00", 3) == [
        "2026-05-04T08:30",
        "2026-05-04T17:30",
        "2026-05-05T08:30",
    ]
    # 1 = Sunday; months by name; a range with a step.
    assert runs("cron(0 0 ? JAN,JUL 1 *)", "2026-01-01T00:00:00+00:00", 2) == ["2026-01-04T00:00", "2026-01-11T00:00"]
    assert runs("cron(0 9-17/4 1 * ? *)", "2026-06-01T00:00:00+00:00", 4) == [
        "2026-06-01T09:00",
        "2026-06-01T13:00",
        "2026-06-01T17:00",
        "2026-07-01T09:00",
    ]
    # Strictly after: a run exactly at ``after`` is not the next one.
    assert runs("cron(0 12 * * ? *)", "2026-05-01T12:00:00+00:00", 1) == ["2026-05-02T12:00"]


def test_cron_last_day_of_month() -> None:
    assert runs("cron(0 12 L * ? *)", "2026-01-31T13:00:00+00:00", 3) == [
        "2026-02-28T12:00",
        "2026-03-31T12:00",
        "2026-04-30T12:00",
    ]
    assert runs("cron(0 12 L 2 ? *)", "2027-03-01T00:00:00+00:00", 1) == ["2028-02-29T12:00"]  # a leap year


def test_cron_nearest_weekday() -> None:
    # 2026-02-15 is a Sunday: the Monday after; 2026-03-15 a Sunday too; 2026-08-15 a Saturday: the Friday.
    assert runs("cron(0 9 15W * ? *)", "2026-02-01T00:00:00+00:00", 2) == ["2026-02-16T09:00", "2026-03-16T09:00"]
    assert runs("cron(0 9 15W 8 ? *)", "2026-01-01T00:00:00+00:00", 1) == ["2026-08-14T09:00"]
    # The 1st a Saturday (2026-08-01): the Monday the 3rd, not the Friday of July.
    assert runs("cron(0 9 1W 8 ? *)", "2026-01-01T00:00:00+00:00", 1) == ["2026-08-03T09:00"]
    # The last weekday: 2026-05-31 is a Sunday, so the 29th.
    assert runs("cron(0 9 LW 5 ? *)", "2026-01-01T00:00:00+00:00", 1) == ["2026-05-29T09:00"]


def test_cron_nth_and_last_weekday_of_month() -> None:
    # 2#1: the first Monday; 6#3: the third Friday; 5L: the last Thursday.
    assert runs("cron(0 10 ? * 2#1 *)", "2026-06-01T11:00:00+00:00", 2) == ["2026-07-06T10:00", "2026-08-03T10:00"]
    assert runs("cron(0 10 ? * FRI#3 *)", "2026-01-01T00:00:00+00:00", 2) == ["2026-01-16T10:00", "2026-02-20T10:00"]
    assert runs("cron(0 10 ? * 5L *)", "2026-01-01T00:00:00+00:00", 2) == ["2026-01-29T10:00", "2026-02-26T10:00"]


def test_cron_year_field() -> None:
    assert runs("cron(0 0 1 1 ? 2028,2030)", "2026-01-01T00:00:00+00:00", 2) == ["2028-01-01T00:00", "2030-01-01T00:00"]
    cron = ex.parse("cron(0 0 1 1 ? 2027)")
    assert isinstance(cron, ex.Cron)
    assert cron.next_run(t("2027-01-01T00:00:00+00:00"), ex.zone("UTC")) is None  # its last run has passed


def test_cron_in_new_york_across_spring_forward() -> None:
    # 2026-03-08: 02:00 EST jumps to 03:00 EDT. 02:30 does not exist that day: skipped.
    assert runs("cron(30 2 * * ? *)", "2026-03-06T12:00:00+00:00", 3, "America/New_York") == [
        "2026-03-07T07:30",  # 02:30 EST
        "2026-03-09T06:30",  # 02:30 EDT (the 8th skipped)
        "2026-03-10T06:30",
    ]
    # A daily 09:00 keeps its local time: 14:00 UTC before, 13:00 UTC after.
    assert runs("cron(0 9 * * ? *)", "2026-03-07T00:00:00+00:00", 2, "America/New_York") == [
        "2026-03-07T14:00",
        "2026-03-08T13:00",
    ]


def test_cron_in_new_york_across_fall_back() -> None:
    # 2026-11-01: 02:00 EDT falls back to 01:00 EST, so 01:30 happens twice; it runs once (the first).
    assert runs("cron(30 1 * * ? *)", "2026-10-31T12:00:00+00:00", 3, "America/New_York") == [
        "2026-11-01T05:30",  # 01:30 EDT
        "2026-11-02T06:30",  # 01:30 EST the next day, not 01:30 EST on the 1st
        "2026-11-03T06:30",
    ]
    # Every 30 minutes through the repeated hour: each local time once.
    assert runs("cron(0/30 * * * ? *)", "2026-11-01T04:40:00+00:00", 4, "America/New_York") == [
        "2026-11-01T05:00",  # 01:00 EDT
        "2026-11-01T05:30",  # 01:30 EDT
        "2026-11-01T07:00",  # 02:00 EST (01:00 and 01:30 EST were run as EDT)
        "2026-11-01T07:30",
    ]


def test_cron_in_berlin_across_both_changes() -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 2026-10-25: 03:00 CEST falls back to 02:00 CET.
    assert runs("cron(15 2 * * ? *)", "2026-03-28T00:00:00+00:00", 2, "Europe/Berlin") == [
        "2026-03-28T01:15",  # 02:15 CET
        "2026-03-30T00:15",  # 02:15 CEST; the 29th's does not exist
    ]
    assert runs("cron(15 2 * * ? *)", "2026-10-24T12:00:00+00:00", 2, "Europe/Berlin") == [
        "2026-10-25T00:15",  # 02:15 CEST, once
        "2026-10-26T01:15",  # 02:15 CET
    ]


def test_at_runs_once_in_its_zone() -> None:
    at = ex.parse("at(2026-07-04T09:00:00)")
    assert isinstance(at, ex.At)
    assert at.next_run(t("2026-07-01T00:00:00+00:00"), NY) == t("2026-07-04T13:00:00+00:00")
    assert at.next_run(t("2026-07-04T13:00:00+00:00"), NY) is None
    assert at.next_run(t("2026-07-01T00:00:00+00:00"), BERLIN) == t("2026-07-04T07:00:00+00:00")


def test_next_due_applies_state_start_and_end() -> None:
    created = t("2026-05-01T10:00:00+00:00").timestamp()
    doc = {"ScheduleExpression": "rate(10 minutes)"}
    assert next_due(doc, created, created) == created + 600
    assert next_due({**doc, "State": "DISABLED"}, created, created) is None
    start = created + 3600
    # A rate counts from StartDate; the first run is at StartDate itself.
    assert next_due({**doc, "StartDate": start}, created, created) == start
    assert next_due({**doc, "StartDate": start}, created, start) == start + 600
    # Nothing after EndDate.
    assert next_due({**doc, "EndDate": created + 900}, created, created + 600) is None
    cron = {"ScheduleExpression": "cron(0 * * * ? *)", "StartDate": start + 1}
    assert next_due(cron, created, created) == start + 3600
    zoned = {"ScheduleExpression": "at(2026-05-01T13:00:00)", "ScheduleExpressionTimezone": "Europe/Berlin"}
    assert next_due(zoned, created, created) == created + 3600  # 13:00 CEST is 11:00 UTC
    assert next_due(zoned, created, created + 3600) is None


def test_timing_next_run_within_start_and_end() -> None:
    timing = ex.Timing(
        ex.parse("cron(0 9 ? * MON-FRI *)"),
        NY,
        anchor=t("2026-03-02T00:00:00+00:00"),
        start=t("2026-03-05T00:00:00+00:00"),
        end=t("2026-03-10T14:00:00+00:00"),
    )
    seen, at = [], t("2026-03-01T00:00:00+00:00")
    while (found := timing.next_run(at)) is not None:
        seen.append(found.strftime("%Y-%m-%dT%H:%M"))
        at = found
    # Thu 5th and Fri 6th at 09:00 EST; Mon 9th and Tue 10th at 09:00 EDT (the change was on the 8th); the end
    # is 10:00 EDT on the 10th, so the 10th's 09:00 is the last.
    assert seen == ["2026-03-05T14:00", "2026-03-06T14:00", "2026-03-09T13:00", "2026-03-10T13:00"]
    rate = ex.Timing(ex.parse("rate(2 hours)"), NY, anchor=t("2026-03-01T00:00:00+00:00"))
    assert rate.next_run(t("2026-03-01T03:00:00+00:00")) == t("2026-03-01T04:00:00+00:00")
    once = ex.Timing(ex.parse("at(2026-03-08T03:30:00)"), NY, anchor=t("2026-01-01T00:00:00+00:00"))
    assert once.next_run(t("2026-03-01T00:00:00+00:00")) == t("2026-03-08T07:30:00+00:00")  # 03:30 EDT


# -- against a brute force ----------------------------------------------------------------------------------


def _matches(cron: ex.Cron, local: dt.datetime) -> bool:
    return (
        local.minute in cron.minutes
        and local.hour in cron.hours
        and local.month in cron.months
        and (cron.years is None or local.year in cron.years)
        and cron.days.matches(local.year, local.month, local.day)
    )


def _brute_force(cron: ex.Cron, after: dt.datetime, tz: ex.ZoneInfo, minutes: int) -> dt.datetime | None:
    """Minute by minute in UTC: an instant runs when its local wall time matches and is that wall time's first
    occurrence (fold 0), which also means a wall time the zone skips never runs."""
    at = after.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    end = at + dt.timedelta(minutes=minutes)
    while at < end:
        local = at.astimezone(tz)
        if local.fold == 0 and _matches(cron, local.replace(tzinfo=None)):
            return at
        if not _date_matches(cron, local):
            # Local dates change only on UTC quarter-hours in these zones (offsets are multiples of 15 min).
            at += dt.timedelta(minutes=15 - at.minute % 15)
        else:
            at += dt.timedelta(minutes=1)
    return None


def _date_matches(cron: ex.Cron, local: dt.datetime) -> bool:
    return (
        local.month in cron.months
        and (cron.years is None or local.year in cron.years)
        and cron.days.matches(local.year, local.month, local.day)
    )


_ZONES = ("UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata")


_DAYS = [("*", "?"), ("?", "MON-FRI"), ("?", "1"), ("L", "?"), ("?", "3#2"), ("15W", "?"), ("?", "6L"), ("1,15", "?")]


@settings(max_examples=150, deadline=None)
@given(
    minute=st.sampled_from(["*", "0", "30", "0/15", "5,35", "10-20/5"]),
    hour=st.sampled_from(["*", "1", "2", "1-3", "0/6", "23"]),
    days=st.sampled_from(_DAYS),
    month=st.sampled_from(["*", "MAR,OCT,NOV", "2", "4-9"]),
    zone=st.sampled_from(_ZONES),
    start=st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2027, 12, 31)),
)
def test_cron_next_run_agrees_with_a_brute_force(
    minute: str, hour: str, days: tuple[str, str], month: str, zone: str, start: dt.datetime
) -> None:
    text = f"cron({minute} {hour} {days[0]} {month} {days[1]} *)"
    cron = ex.parse(text)
    assert isinstance(cron, ex.Cron)
    tz = ex.zone(zone)
    after = start.replace(tzinfo=UTC)
    expected = _brute_force(cron, after, tz, minutes=100 * 24 * 60)
    found = cron.next_run(after, tz)
    if expected is not None:
        assert found == expected, text
    else:  # beyond the brute force's 100 days: next_run's answer must be later still
        assert found is None or found > after + dt.timedelta(days=100), text
