"""Report periods: fixed intervals aligned on the Unix epoch (15m, 1h, 1d) or between cron fire times."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from secureml.reporting.cron import CronExpression
from secureml.reporting.exceptions import InvalidScheduleError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INTERVAL = re.compile(r"^\s*(\d+)\s*([mhd])\s*$", re.IGNORECASE)
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}


class Schedule(Protocol):
    """Boundaries that cut time into report periods; times are aware UTC datetimes."""

    def period_start(self, moment: datetime) -> datetime:
        """The start of the period that holds moment (the last boundary at or before it)."""

    def next_boundary(self, boundary: datetime) -> datetime:
        """The first boundary strictly after the given time."""


@dataclass(frozen=True)
class IntervalSchedule:
    """Periods of a fixed width, aligned on the Unix epoch: 1h starts on the hour, 1d at 00:00 UTC."""

    width: timedelta

    def period_start(self, moment: datetime) -> datetime:
        """The start of the period that holds moment."""
        return EPOCH + ((moment - EPOCH) // self.width) * self.width

    def next_boundary(self, boundary: datetime) -> datetime:
        """The first boundary strictly after the given time."""
        return self.period_start(boundary) + self.width


@dataclass(frozen=True)
class CronSchedule:
    """Periods between consecutive fire times of a cron expression (UTC)."""

    expression: CronExpression

    def period_start(self, moment: datetime) -> datetime:
        """The last fire time at or before moment."""
        return _aware(self.expression.latest_at_or_before(_naive(moment)))

    def next_boundary(self, boundary: datetime) -> datetime:
        """The first fire time strictly after the given time."""
        return _aware(self.expression.next_after(_naive(boundary)))


def parse_every(text: str) -> Schedule:
    """A schedule from --every: an interval such as 15m, 1h, 1d, or a 5-field cron expression."""
    match = _INTERVAL.match(text)
    if match:
        width = int(match.group(1)) * _UNITS[match.group(2).lower()]
        if width <= timedelta(0):
            raise InvalidScheduleError(f"--every {text!r} is empty; use a positive interval such as 1h.")
        return IntervalSchedule(width)
    if len(text.split()) == 5:
        return CronSchedule(CronExpression.parse(text))
    raise InvalidScheduleError(
        f"--every {text!r} is neither an interval (15m, 1h, 1d) nor a 5-field cron expression "
        "(minute hour day-of-month month day-of-week, in UTC, e.g. '0 6 * * *')."
    )


def _naive(moment: datetime) -> datetime:
    """An aware time as naive UTC, for the cron arithmetic."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def _aware(moment: datetime) -> datetime:
    """A naive UTC time as an aware one."""
    return moment.replace(tzinfo=UTC)
