"""Timer schedules as the Functions host reads them: NCRONTAB expressions and the TimeSpan form.

A schedule is either six NCRONTAB fields ``{second} {minute} {hour} {day} {month} {day-of-week}`` (five
fields, without seconds, are accepted too, as the host's NCrontab parser does) or a constant interval in
the TimeSpan form ``hh:mm[:ss]`` / ``d.hh:mm:ss``. NCrontab rules kept here: ``*``, values, ranges
``a-b``, lists ``a,b``, steps ``*/n``, ``a-b/n`` and ``a/n`` (``a`` to the field maximum); month and
day names (``Jan``, ``Mon``; three letters or the full English name, any case); days of week 0-6 with
Sunday 0; day-of-month and day-of-week must *both* match (NCrontab ANDs them, unlike Vixie cron).

Occurrences are computed in the schedule's time zone (UTC unless one is given), second by second
precision, strictly after the given instant. Pure: no clock, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

__all__ = ["CronSchedule", "IntervalSchedule", "Schedule", "ScheduleError", "parse_schedule"]

MONTH_NAMES = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_TIMESPAN = re.compile(r"^(?:(?P<days>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{1,2})(?::(?P<s>\d{1,2}))?$")
_SEARCH_YEARS = 8  # covers every valid Feb-29-and-weekday combination


class ScheduleError(ValueError):
    """The schedule text is not a valid NCRONTAB expression or TimeSpan."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_base: int = 0


_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day", 1, 31),
    _Field("month", 1, 12, MONTH_NAMES, 1),
    _Field("day-of-week", 0, 6, DAY_NAMES, 0),
)


def _value(text: str, field: _Field) -> int:
    if text.isdigit():
        number = int(text)
    else:
        lowered = text.lower()
        matches = [i for i, full in enumerate(field.names) if len(lowered) >= 3 and full.startswith(lowered)]
        if not matches:
            raise ScheduleError(f"{field.name}: {text!r} is not a number or a {field.name} name")
        number = matches[0] + field.name_base
    if not field.low <= number <= field.high:
        raise ScheduleError(f"{field.name}: {number} is outside {field.low}-{field.high}")
    return number


def _parse_field(text: str, field: _Field) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise ScheduleError(f"{field.name}: empty list item in {text!r}")
        base, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"{field.name}: bad step in {item!r}")
            step = int(step_text)
        if base == "*":
            first, last = field.low, field.high
        elif "-" in base:
            start, _, end = base.partition("-")
            first, last = _value(start, field), _value(end, field)
            if first > last:
                raise ScheduleError(f"{field.name}: range {base!r} runs backwards")
        else:
            first = _value(base, field)
            last = field.high if step_text else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed NCRONTAB expression; ``next_after`` gives the next matching instant."""

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    zone: tzinfo = UTC

    def next_after(self, when: datetime) -> datetime:
        """The first occurrence strictly after ``when`` (an aware datetime), in the schedule's zone."""
        if when.tzinfo is None:
            raise ValueError("next_after needs an aware datetime")
        local = when.astimezone(self.zone).replace(tzinfo=None, microsecond=0) + timedelta(seconds=1)
        limit = local.year + _SEARCH_YEARS
        while local.year <= limit:
            if local.month not in self.months:
                year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
                local = datetime(year, month, 1)
            elif local.day not in self.days or (local.weekday() + 1) % 7 not in self.weekdays:
                local = datetime(local.year, local.month, local.day) + timedelta(days=1)
            elif local.hour not in self.hours:
                local = local.replace(minute=0, second=0) + timedelta(hours=1)
            elif local.minute not in self.minutes:
                local = local.replace(second=0) + timedelta(minutes=1)
            elif local.second not in self.seconds:
                local += timedelta(seconds=1)
            else:
                return local.replace(tzinfo=self.zone)
        raise ScheduleError(f"{self.expression!r} has no occurrence in the next {_SEARCH_YEARS} years")

    def describe(self) -> str:
        return self.expression


@dataclass(frozen=True)
class IntervalSchedule:
    """The TimeSpan form: a constant interval, each occurrence measured from the previous one."""

    expression: str
    interval: timedelta

    def next_after(self, when: datetime) -> datetime:
        if when.tzinfo is None:
            raise ValueError("next_after needs an aware datetime")
        return when + self.interval

    def describe(self) -> str:
        return f"every {self.interval} ({self.expression})"


Schedule = CronSchedule | IntervalSchedule


def parse_schedule(text: str, *, zone: tzinfo = UTC) -> Schedule:
    """Parse a timer trigger's ``schedule`` (after ``%SETTING%`` resolution)."""
    expression = " ".join(text.split())
    if not expression:
        raise ScheduleError("the schedule is empty")
    span = _TIMESPAN.match(expression)
    if span:
        hours, minutes, seconds = int(span["h"]), int(span["m"]), int(span["s"] or 0)
        if hours > 23 or minutes > 59 or seconds > 59:
            raise ScheduleError(f"{expression!r}: TimeSpan parts out of range (hh < 24, mm and ss < 60)")
        interval = timedelta(days=int(span["days"] or 0), hours=hours, minutes=minutes, seconds=seconds)
        if interval <= timedelta(0):
            raise ScheduleError(f"{expression!r}: the interval must be positive")
        return IntervalSchedule(expression, interval)
    parts = expression.split(" ")
    if len(parts) == 5:
        parts = ["0", *parts]
    if len(parts) != 6:
        raise ScheduleError(
            f"{expression!r}: expected six NCRONTAB fields "
            "'{second} {minute} {hour} {day} {month} {day-of-week}' or a TimeSpan 'hh:mm:ss'"
        )
    fields = [_parse_field(part, field) for part, field in zip(parts, _FIELDS, strict=True)]
    return CronSchedule(
        expression, fields[0], fields[1], fields[2], fields[3], fields[4], fields[5], zone=zone
    )
