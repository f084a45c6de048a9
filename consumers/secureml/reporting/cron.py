"""A 5-field cron expression (minute hour day-of-month month day-of-week), evaluated in UTC.

Fields take `*`, numbers, names (jan-dec, sun-sat), lists `a,b`, ranges `a-b` and steps
`*/n`, `a-b/n`, `a/n`. Day of week 0 and 7 are Sunday. As in Vixie cron, when both day
fields are restricted a day matches either of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from secureml.reporting.exceptions import InvalidScheduleError

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, lowest, highest, names that stand for lowest, lowest + 1, ...)
_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
SEARCH_YEARS = 5
_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class CronExpression:
    """The sets of values each field allows."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        """Parse 'minute hour day-of-month month day-of-week'."""
        fields = text.split()
        if len(fields) != 5:
            raise InvalidScheduleError(
                f"Cron expression {text!r} has {len(fields)} field(s); write 5: minute hour day-of-month "
                "month day-of-week, e.g. '0 6 * * mon-fri' for 06:00 UTC on weekdays."
            )
        values = [_parse_field(field, *spec, text) for field, spec in zip(fields, _FIELDS)]
        weekdays = frozenset(0 if d == 7 else d for d in values[4])
        expression = cls(text, values[0], values[1], values[2], values[3], weekdays,
                         not fields[2].startswith("*"), not fields[4].startswith("*"))
        expression.next_after(datetime(2000, 1, 1))  # fails now, not later, for dates that never come (30 feb)
        return expression

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after moment (naive UTC, minute precision)."""
        candidate = moment.replace(second=0, microsecond=0) + _MINUTE
        limit = moment.year + SEARCH_YEARS
        while candidate.year <= limit:
            if candidate.month not in self.months:
                candidate = _month_start(candidate, +1)
            elif not self._day_matches(candidate):
                candidate = candidate.replace(hour=0, minute=0) + timedelta(days=1)
            elif candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0) + timedelta(hours=1)
            elif candidate.minute not in self.minutes:
                candidate += _MINUTE
            else:
                return candidate
        raise self._never()

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last fire time at or before moment (naive UTC, minute precision)."""
        candidate = moment.replace(second=0, microsecond=0)
        limit = moment.year - SEARCH_YEARS
        while candidate.year >= limit:
            if candidate.month not in self.months:
                candidate = _month_start(candidate, 0) - _MINUTE
            elif not self._day_matches(candidate):
                candidate = candidate.replace(hour=0, minute=0) - _MINUTE
            elif candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0) - _MINUTE
            elif candidate.minute not in self.minutes:
                candidate -= _MINUTE
            else:
                return candidate
        raise self._never()

    def _day_matches(self, moment: datetime) -> bool:
        """Whether the day fields allow this date."""
        by_date = moment.day in self.days
        by_weekday = (moment.weekday() + 1) % 7 in self.weekdays  # Python: Monday=0; cron: Sunday=0
        if self.days_restricted and self.weekdays_restricted:
            return by_date or by_weekday
        return by_date and by_weekday

    def _never(self) -> InvalidScheduleError:
        """The error for an expression that never fires (e.g. '0 0 30 2 *')."""
        return InvalidScheduleError(
            f"Cron expression {self.text!r} never fires within {SEARCH_YEARS} years; check the day and month fields."
        )


def _month_start(moment: datetime, months_ahead: int) -> datetime:
    """Midnight on the first day of this month (0) or the next (+1)."""
    first = moment.replace(day=1, hour=0, minute=0)
    if months_ahead == 0:
        return first
    return first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)


def _parse_field(field: str, name: str, lowest: int, highest: int, names: tuple[str, ...], text: str) -> frozenset[int]:
    """The values one field allows."""
    values: set[int] = set()
    for item in field.split(","):
        span, _, step_text = item.partition("/")
        step = _number(step_text, name, text, names=(), lowest=0) if step_text else 1
        if step < 1:
            raise InvalidScheduleError(f"Cron expression {text!r}: the step in {item!r} ({name}) must be 1 or more.")
        if span == "*":
            first, last = lowest, highest
        elif "-" in span:
            start, _, end = span.partition("-")
            first, last = _number(start, name, text, names, lowest), _number(end, name, text, names, lowest)
        else:
            first = _number(span, name, text, names, lowest)
            last = highest if step_text else first
        if not lowest <= first <= last <= highest:
            raise InvalidScheduleError(
                f"Cron expression {text!r}: {item!r} is outside {lowest}-{highest} or reversed ({name})."
            )
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _number(token: str, name: str, text: str, names: tuple[str, ...], lowest: int) -> int:
    """A field value written as a number or a name."""
    if token.lower() in names:
        return names.index(token.lower()) + lowest
    if not token.isdigit():
        raise InvalidScheduleError(
            f"Cron expression {text!r}: {token!r} is not a number{' or a name' if names else ''} ({name})."
        )
    return int(token)
