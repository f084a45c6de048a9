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


def parse_time(value: str | dt.datetime | dt.date | None, field: str) -> dt.datetime | None:
    """An aware UTC datetime from ISO text, a datetime or a date; naive values are taken as UTC."""
    from secureml.audit.exceptions import AuditValidationError

    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise AuditValidationError(
                field, f"must be an ISO 8601 time such as 2023-01-01T00:00:00, got {value!r}"
            ) from None
    elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, dt.datetime):
        raise AuditValidationError(field, f"must be an ISO 8601 string or a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)
