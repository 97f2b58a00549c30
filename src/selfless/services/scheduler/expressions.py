"""Schedule expressions as EventBridge Scheduler reads them, and when each one runs next.

- ``rate(N unit)``: every N minutes, hours or days (``minute``/``hour``/``day`` when N is 1), counted from an
  anchor (the schedule's StartDate, else when it was created): runs at ``anchor + k * period``, the first at
  the anchor itself (AWS: without a StartDate a rate schedule starts invoking at once). A day is 24 hours,
  whatever daylight saving does to the local clock.
- ``cron(minutes hours day-of-month month day-of-week year)``: AWS's six fields, in the schedule's time zone.
  Each field takes ``*``, values, lists (``,``), ranges (``-``), increments (``/``); day-of-month or
  day-of-week must be ``?`` (not both given); day-of-month also ``L`` (last day), ``W`` (``15W``: the weekday
  nearest the 15th, within the month; ``LW``: the last weekday); day-of-week ``1-7`` with 1 = Sunday, or
  ``SUN``-``SAT``, also ``nL`` (the last such day of the month) and ``n#k`` (the k-th such day); months
  ``1-12`` or ``JAN``-``DEC``; years 1970-2199.
- ``at(yyyy-mm-ddThh:mm:ss)``: once, at that local time.

Daylight saving (a zone's local clock jumping): a local time that does not exist (the hour skipped in spring)
is not run; a local time that occurs twice (the hour repeated in autumn) runs once, at its first occurrence.
Every instant here is an aware ``datetime``; ``next_run(after)`` is strictly after ``after``.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = dt.UTC

_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
MONTHS = {name: i + 1 for i, name in enumerate(_MONTH_NAMES)}
DAYS = {name: i + 1 for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((.*)\)$")
_AT = re.compile(r"^at\((\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\)$")
_UNIT_S = {"minute": 60, "hour": 3600, "day": 86400}
MAX_YEAR = 2199


class InvalidExpression(ValueError):
    """The expression (or time zone) cannot be read; the message says what is wrong."""


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidExpression(f"Invalid time zone: {name}") from exc


def _local_instant(naive: dt.datetime, tz: ZoneInfo) -> dt.datetime | None:
    """``naive`` local time as an instant: None when the zone skips it; its first occurrence when it repeats."""
    first = naive.replace(tzinfo=tz, fold=0)
    back = first.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    if back != naive:
        return None  # in a gap: the clock jumped over it
    return first.astimezone(UTC)


@dataclasses.dataclass(frozen=True)
class Rate:
    period_s: int

    def next_run(self, after: dt.datetime, anchor: dt.datetime) -> dt.datetime:
        if after < anchor:
            return anchor
        k = int((after - anchor).total_seconds() // self.period_s) + 1
        return anchor + dt.timedelta(seconds=k * self.period_s)


@dataclasses.dataclass(frozen=True)
class At:
    local: dt.datetime  # naive, in the schedule's zone

    def next_run(self, after: dt.datetime, tz: ZoneInfo) -> dt.datetime | None:
        when = self.local.replace(tzinfo=tz, fold=0).astimezone(UTC)
        return when if when > after else None


@dataclasses.dataclass(frozen=True)
class DayRule:
    """Day-of-month and day-of-week: the sets, or AWS's special forms."""

    dom: frozenset[int] | None = None  # None: '?'
    dom_last: bool = False  # L
    dom_weekday: int | None = None  # nW (0: LW)
    dow: frozenset[int] | None = None  # 1 = Sunday ... 7 = Saturday; None: '?'
    dow_last: int | None = None  # nL
    dow_nth: tuple[int, int] | None = None  # n#k

    def matches(self, year: int, month: int, day: int) -> bool:
        last = calendar.monthrange(year, month)[1]
        weekday = (dt.date(year, month, day).weekday() + 1) % 7 + 1  # Monday=2 ... Sunday=1
        if self.dom_last:
            return day == last
        if self.dom_weekday is not None:
            return day == _nearest_weekday(year, month, self.dom_weekday or last, last)
        if self.dom is not None:
            return day in self.dom
        if self.dow_last is not None:
            return weekday == self.dow_last and day + 7 > last
        if self.dow_nth is not None:
            wanted, nth = self.dow_nth
            return weekday == wanted and (day - 1) // 7 + 1 == nth
        return self.dow is not None and weekday in self.dow


def _nearest_weekday(year: int, month: int, day: int, last: int) -> int:
    """The weekday (Mon-Fri) nearest ``day`` without leaving the month (cron's ``W``)."""
    day = min(day, last)
    wd = dt.date(year, month, day).weekday()  # Monday=0
    if wd == 5:  # Saturday: the Friday before, or the Monday after on the 1st
        return day - 1 if day > 1 else day + 2
    if wd == 6:  # Sunday: the Monday after, or the Friday before on the last day
        return day + 1 if day < last else day - 2
    return day


@dataclasses.dataclass(frozen=True)
class Cron:
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: frozenset[int]
    years: frozenset[int] | None  # None: every year
    days: DayRule

    def next_run(self, after: dt.datetime, tz: ZoneInfo) -> dt.datetime | None:
        start = after.astimezone(tz).replace(tzinfo=None)
        day = start.date()
        for year in range(day.year, MAX_YEAR + 1):
            if self.years is not None and year not in self.years:
                continue
            for month in sorted(self.months):
                if (year, month) < (day.year, day.month):
                    continue
                first = day.day if (year, month) == (day.year, day.month) else 1
                for d in range(first, calendar.monthrange(year, month)[1] + 1):
                    if not self.days.matches(year, month, d):
                        continue
                    for hour in self.hours:
                        for minute in self.minutes:
                            when = _local_instant(dt.datetime(year, month, d, hour, minute), tz)
                            if when is not None and when > after:
                                return when
        return None


Expression = Rate | Cron | At


@dataclasses.dataclass(frozen=True)
class Timing:
    """When a schedule runs: its expression in its zone, within StartDate/EndDate (which at() ignores);
    ``anchor`` is where a rate counts from."""

    expression: Expression
    tz: ZoneInfo
    anchor: dt.datetime
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def next_run(self, after: dt.datetime) -> dt.datetime | None:
        """The first run strictly after ``after``; None when there is none."""
        expr = self.expression
        if isinstance(expr, At):
            return expr.next_run(after, self.tz)
        since = after
        if self.start is not None and self.start > after:
            since = self.start - dt.timedelta(microseconds=1)  # a run at StartDate itself counts
        when = expr.next_run(since, self.anchor) if isinstance(expr, Rate) else expr.next_run(since, self.tz)
        if when is not None and self.end is not None and when > self.end:
            return None
        return when


def parse(text: str) -> Expression:
    """An expression read, or InvalidExpression."""
    m = _RATE.match(text)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        if n < 1 or (n == 1) != (not unit.endswith("s")):
            raise InvalidExpression(f"Invalid Schedule Expression {text}.")
        return Rate(n * _UNIT_S[unit.rstrip("s")])
    m = _AT.match(text)
    if m:
        try:
            y, mo, d, h, mi, sec = (int(g) for g in m.groups())
            return At(dt.datetime(y, mo, d, h, mi, sec))
        except ValueError:
            raise InvalidExpression(f"Invalid Schedule Expression {text}.") from None
    m = _CRON.match(text)
    if m:
        try:
            return _cron(m.group(1).split())
        except ValueError:
            raise InvalidExpression(f"Invalid Schedule Expression {text}.") from None
    raise InvalidExpression(f"Invalid Schedule Expression {text}.")


def _cron(fields: list[str]) -> Cron:
    if len(fields) != 6:
        raise ValueError("six fields")
    minute, hour, dom, month, dow, year = (f.upper() for f in fields)
    if (dom == "?") == (dow == "?"):
        raise ValueError("one of day-of-month and day-of-week must be '?'")
    days = _dom_rule(dom) if dom != "?" else _dow_rule(dow)
    return Cron(
        tuple(sorted(_values(minute, 0, 59))),
        tuple(sorted(_values(hour, 0, 23))),
        frozenset(_values(month, 1, 12, MONTHS)),
        None if year == "*" else frozenset(_values(year, 1970, MAX_YEAR)),
        days,
    )


def _dom_rule(field: str) -> DayRule:
    if field == "L":
        return DayRule(dom_last=True)
    if field == "LW":
        return DayRule(dom_weekday=0)
    if field.endswith("W"):
        day = _number(field[:-1], 1, 31)
        return DayRule(dom_weekday=day)
    return DayRule(dom=frozenset(_values(field, 1, 31)))


def _dow_rule(field: str) -> DayRule:
    if field.endswith("L") and len(field) > 1:
        return DayRule(dow_last=_number(field[:-1], 1, 7, DAYS))
    if field == "L":
        return DayRule(dow=frozenset({7}))  # cron's plain L in day-of-week: the last day of the week
    if "#" in field:
        day, _, nth = field.partition("#")
        return DayRule(dow_nth=(_number(day, 1, 7, DAYS), _number(nth, 1, 5)))
    return DayRule(dow=frozenset(_values(field, 1, 7, DAYS)))


def _number(text: str, low: int, high: int, names: dict[str, int] | None = None) -> int:
    value = names[text] if names and text in names else int(text) if text.isdigit() else None
    if value is None or not low <= value <= high:
        raise ValueError(text)
    return value


def _values(field: str, low: int, high: int, names: dict[str, int] | None = None) -> set[int]:
    out: set[int] = set()
    for part in field.split(","):
        base, slash, step_text = part.partition("/")
        step = _number(step_text, 1, high) if slash else 1
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = _number(a, low, high, names), _number(b, low, high, names)
            if first > last:
                raise ValueError(part)
        else:
            first = _number(base, low, high, names)
            last = high if slash else first
        out.update(range(first, last + 1, step))
    return out
