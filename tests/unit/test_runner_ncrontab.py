"""NCRONTAB and TimeSpan schedules, checked against the examples in Microsoft's timer trigger docs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from runner.ncrontab import CronSchedule, IntervalSchedule, ScheduleError, parse_schedule

START = datetime(2024, 1, 1, 0, 0, 0, tzinfo=UTC)  # a Monday


def occurrences(expression: str, count: int, start: datetime = START) -> list[datetime]:
    schedule = parse_schedule(expression)
    found, when = [], start
    for _ in range(count):
        when = schedule.next_after(when)
        found.append(when)
    return found


def at(
    day: int, hour: int = 0, minute: int = 0, second: int = 0, month: int = 1, year: int = 2024
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # "once every five minutes"
        ("0 */5 * * * *", [at(1, 0, 5), at(1, 0, 10), at(1, 0, 15)]),
        # "once at the top of every hour"
        ("0 0 * * * *", [at(1, 1), at(1, 2), at(1, 3)]),
        # "once every two hours"
        ("0 0 */2 * * *", [at(1, 2), at(1, 4), at(1, 6)]),
        # "once every hour from 9 AM to 5 PM"
        ("0 0 9-17 * * *", [at(1, 9), at(1, 10), at(1, 11)]),
        # "at 9:30 AM every day"
        ("0 30 9 * * *", [at(1, 9, 30), at(2, 9, 30), at(3, 9, 30)]),
        # "every 15 seconds"
        ("*/15 * * * * *", [at(1, 0, 0, 15), at(1, 0, 0, 30), at(1, 0, 0, 45)]),
        # "once every hour, at minute 5"
        ("0 5 * * * *", [at(1, 0, 5), at(1, 1, 5), at(1, 2, 5)]),
    ],
)
def test_documented_examples(expression: str, expected: list[datetime]) -> None:
    assert occurrences(expression, len(expected)) == expected


def test_weekdays_only() -> None:
    # "at 9:30 AM every weekday": from Friday 5 Jan after 9:30 the next is Monday 8 Jan
    assert occurrences("0 30 9 * * 1-5", 2, at(5, 10)) == [at(8, 9, 30), at(9, 9, 30)]


def test_month_and_day_names() -> None:
    # "at 9:30 AM every Monday in January"
    assert occurrences("0 30 9 * Jan Mon", 4) == [at(1, 9, 30), at(8, 9, 30), at(15, 9, 30), at(22, 9, 30)]
    assert occurrences("0 30 9 * Jan Mon", 1, at(29, 10)) == [at(6, 9, 30, year=2025)]
    named, numbered = parse_schedule("0 0 0 * JANUARY,feb sunday"), parse_schedule("0 0 0 * 1,2 0")
    assert isinstance(named, CronSchedule)
    assert isinstance(numbered, CronSchedule)
    assert (
        (named.months, named.weekdays)
        == (numbered.months, numbered.weekdays)
        == (frozenset({1, 2}), frozenset({0}))
    )


def test_day_of_month_and_day_of_week_must_both_match() -> None:
    # NCrontab ANDs the two fields: Friday the 13th
    assert occurrences("0 0 0 13 * 5", 2) == [at(13, month=9), at(13, month=12)]


def test_lists_ranges_and_steps() -> None:
    schedule = parse_schedule("0,30 1-10/3 5/20 * * *")
    assert isinstance(schedule, CronSchedule)
    assert schedule.seconds == {0, 30}
    assert schedule.minutes == {1, 4, 7, 10}
    assert schedule.hours == {5}  # 5/20: from 5 to 23 every 20 hours
    assert schedule.weekdays == set(range(7))


def test_leap_day() -> None:
    assert occurrences("0 0 0 29 2 *", 1, at(1, month=3)) == [at(29, month=2, year=2028)]


def test_five_fields_mean_second_zero() -> None:
    assert occurrences("*/5 * * * *", 2) == [at(1, 0, 5), at(1, 0, 10)]


def test_next_is_strictly_after_and_ignores_microseconds() -> None:
    schedule = parse_schedule("*/1 * * * * *")
    assert schedule.next_after(at(1, 0, 0, 5)) == at(1, 0, 0, 6)
    assert schedule.next_after(at(1, 0, 0, 5) + timedelta(microseconds=999_999)) == at(1, 0, 0, 6)


def test_time_zone() -> None:
    schedule = parse_schedule("0 0 9 * * *", zone=ZoneInfo("Europe/Paris"))
    assert schedule.next_after(START).astimezone(UTC) == at(1, 8)


@pytest.mark.parametrize(
    ("expression", "interval"),
    [
        ("00:00:30", timedelta(seconds=30)),
        ("01:00:00", timedelta(hours=1)),
        ("00:05", timedelta(minutes=5)),
        ("1.02:00:00", timedelta(days=1, hours=2)),
    ],
)
def test_timespan_form(expression: str, interval: timedelta) -> None:
    schedule = parse_schedule(expression)
    assert isinstance(schedule, IntervalSchedule)
    assert schedule.next_after(START) == START + interval


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "* * * *",
        "* * * * * * *",
        "61 * * * * *",
        "0 0 24 * * *",
        "0 0 0 0 * *",
        "0 0 0 * 13 *",
        "0 0 0 * * 7",
        "0 0 0 * Foo *",
        "0 0 0 * * Mo",
        "*/0 * * * * *",
        "5-1 * * * * *",
        "1,,2 * * * * *",
        "24:00:00",
        "00:00:00",
        "00:60:00",
    ],
)
def test_invalid_schedules(expression: str) -> None:
    with pytest.raises(ScheduleError):
        parse_schedule(expression)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError):
        parse_schedule("* * * * * *").next_after(datetime(2024, 1, 1))
