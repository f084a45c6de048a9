"""Lengths of time in rule options: ``90s``, ``15m``, ``1h``, ``30d``, ``2w``, or calendar months ``1mo``."""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator

from secureml.audit.timeutil import micros_to_datetime

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PATTERN = re.compile(r"^(\d+(?:\.\d+)?)\s*(mo|s|m|h|d|w)?$")
_MICROS = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class Period:
    """Calendar months plus seconds: GDPR's 'one month' is a calendar month, not 30 days."""

    months: int = 0
    seconds: float = 0.0

    def after(self, micros: int) -> int:
        """The UTC time (micros) this period after ``micros``; a month ends on the same day or the month's last."""
        start = micros_to_datetime(micros)
        years, month = divmod(start.month - 1 + self.months, 12)
        year = start.year + years
        moved = start.replace(year=year, month=month + 1, day=min(start.day, calendar.monthrange(year, month + 1)[1]))
        return micros + (moved - start) // _MICROS + round(self.seconds * 1_000_000)

    def __str__(self) -> str:
        if self.months:
            return f"{self.months}mo"
        for unit in ("w", "d", "h", "m"):
            if self.seconds and self.seconds % _UNIT_SECONDS[unit] == 0:
                return f"{self.seconds / _UNIT_SECONDS[unit]:g}{unit}"
        return f"{self.seconds:g}s"


def parse_period(value: Any) -> Period:
    """A Period from seconds (a number) or text such as '45d' or '1mo'."""
    if isinstance(value, Period):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"must be a positive length of time, got {value}")
        return Period(seconds=float(value))
    match = _PATTERN.match(str(value).strip().lower()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"must be a length of time such as 90s, 15m, 1h, 30d, 2w or 1mo, got {value!r}")
    amount, unit = float(match[1]), match[2] or "s"
    if amount <= 0:
        raise ValueError(f"must be a positive length of time, got {value!r}")
    if unit == "mo":
        if not amount.is_integer():
            raise ValueError(f"months must be whole, got {value!r}")
        return Period(months=int(amount))
    return Period(seconds=amount * _UNIT_SECONDS[unit])


def parse_seconds(value: Any) -> float:
    """A fixed length of time in seconds (months are refused: they have no fixed length)."""
    period = parse_period(value)
    if period.months:
        raise ValueError(f"months have no fixed length here: give days instead, e.g. 30d (got {value!r})")
    return period.seconds


Deadline = Annotated[Period, PlainValidator(parse_period), PlainSerializer(str)]
Duration = Annotated[float, PlainValidator(parse_seconds)]
