"""UTC timestamps as integer microseconds, and their ISO 8601 form."""

from __future__ import annotations

import datetime as dt
import time

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def now_micros() -> int:
    """Current UTC time in microseconds since the epoch."""
    return time.time_ns() // 1000


def micros_to_datetime(micros: int) -> dt.datetime:
    """Aware UTC datetime of a microsecond timestamp (exact, no float rounding)."""
    return EPOCH + dt.timedelta(microseconds=micros)


def micros_to_iso(micros: int) -> str:
    """ISO 8601 UTC text with microseconds, e.g. 2026-11-28T05:01:02.123456+00:00."""
    return micros_to_datetime(micros).isoformat(timespec="microseconds")



def datetime_to_micros(moment: dt.datetime) -> int:
    """Microseconds since the epoch of a datetime (naive = UTC), exact."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - EPOCH) // dt.timedelta(microseconds=1)
