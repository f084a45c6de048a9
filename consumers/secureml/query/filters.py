"""Event filters, shared by queries and reports: the one time parser and the one SQL WHERE clause.

Every filter narrows the events (they combine with AND); time bounds are inclusive and naive
times are UTC. A filter that cannot be used raises AuditValidationError naming it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from secureml.audit.exceptions import AuditValidationError
from secureml.audit.timeutil import datetime_to_micros


def parse_time(value: object, field: str, where: str | None = None) -> dt.datetime:
    """An aware UTC datetime from ISO 8601 text, a datetime or a date; naive values are taken as UTC."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise AuditValidationError(
                field, f"must be an ISO 8601 time such as 2023-01-01T00:00:00 (UTC), got {value[:100]!r}", where=where
            ) from None
    elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, dt.datetime):
        raise AuditValidationError(field, f"must be an ISO 8601 string or a datetime, got {type(value).__name__}",
                                   where=where)
    try:
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        raise AuditValidationError(field, f"must be a time between years 1 and 9999 in UTC, got {value}",
                                   where=where) from None


@dataclass(frozen=True)
class Selection:
    """The SQL WHERE clause (with its parameters) that a set of filters stands for, and its time bounds."""

    where: str  # "" or " WHERE ...", to append to a query over the events
    params: list[object]
    start: dt.datetime | None
    end: dt.datetime | None

    @property
    def start_micros(self) -> int | None:
        """The start bound in microseconds since the epoch (for pruning files by their statistics)."""
        return _micros(self.start)

    @property
    def end_micros(self) -> int | None:
        """The end bound in microseconds since the epoch (for pruning files by their statistics)."""
        return _micros(self.end)


def select_events(
    *,
    operation_id: object = None,
    operation_name: object = None,
    start_time: object = None,
    end_time: object = None,
    event_type: object = None,
    user: object = None,
    where: str = "get_audit_logs",
    user_forms: list[str] | None = None,
    subject_forms: list[str] | None = None,
) -> Selection:
    """Check the filters (None: not filtered on) and translate them into a Selection.

    ``event_type`` is one type or a list of types; the other filters match exactly. ``where``
    names the call in errors. ``user_forms`` are the stored forms of ``user`` (the id as typed,
    and its pseudonym); ``subject_forms`` those of a data subject, matched as the user, the
    request's ``user_id``, or the key of values encrypted for it.
    """
    clauses: list[str] = []
    params: list[object] = []
    for column, value in (("operation_id", operation_id), ("operation_name", operation_name), ("user", user)):
        if value is not None:
            if not isinstance(value, str):
                raise AuditValidationError(column, f"must be a string, got {type(value).__name__}", where=where)
            if column == "user" and user_forms:
                clauses.append('"user" IN (SELECT unnest(?))')
                params.append(user_forms)
                continue
            clauses.append(f'"{column}" = ?')
            params.append(value)
    if subject_forms:
        keyed = [f"%enc:v1:{form}:%" for form in subject_forms if form.startswith("ps_")]
        subject_clauses = ['"user" IN (SELECT unnest(?))', '"user_id" IN (SELECT unnest(?))']
        params += [subject_forms, subject_forms]
        for column in ("input_data", "details", "parameters", "context"):
            for pattern in keyed:
                subject_clauses.append(f'"{column}" LIKE ?')
                params.append(pattern)
        clauses.append(f"({' OR '.join(subject_clauses)})")
    if event_type is not None:
        clauses.append("event_type IN (SELECT unnest(?))")
        params.append(_event_types(event_type, where))
    start = None if start_time is None else parse_time(start_time, "start_time", where)
    end = None if end_time is None else parse_time(end_time, "end_time", where)
    if start is not None and end is not None and start > end:
        raise AuditValidationError("start_time", f"must not be after end_time ({start.isoformat()} > "
                                   f"{end.isoformat()})", where=where)
    if start is not None:
        clauses.append('"timestamp" >= ?')
        params.append(start)
    if end is not None:
        clauses.append('"timestamp" <= ?')
        params.append(end)
    return Selection(f" WHERE {' AND '.join(clauses)}" if clauses else "", params, start, end)


def _event_types(value: object, where: str) -> list[str]:
    """The event types a filter names: one string, or an iterable of strings."""
    if isinstance(value, str):
        return [value]
    types = list(value) if isinstance(value, Iterable) and not isinstance(value, (bytes, dict)) else None
    if types is None or not all(isinstance(t, str) for t in types):
        raise AuditValidationError("event_type", f"must be a string or a list of strings, got {value!r:.100}",
                                   where=where)
    return types


def _micros(moment: dt.datetime | None) -> int | None:
    return None if moment is None else datetime_to_micros(moment)
