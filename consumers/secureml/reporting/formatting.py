"""How numbers, times and long values are written in a report."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

MAX_CELL_CHARS = 160


def count(value: int | float | None) -> str:
    """An integer with thousands separators; '0' for None."""
    return f"{int(value or 0):,}"


def number(value: float | None, digits: int = 3) -> str:
    """A float rounded for reading; an em dash for None."""
    return "—" if value is None else f"{value:,.{digits}f}"


def utc(moment: datetime | None) -> str:
    """A time in UTC as 'YYYY-MM-DD HH:MM:SS'; naive values are already UTC."""
    if moment is None:
        return "—"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def day(moment: datetime | None) -> str:
    """The UTC date of a time as 'YYYY-MM-DD'."""
    return utc(moment)[:10] if moment is not None else "—"


def duration(span: timedelta | float | None) -> str:
    """A duration as '850 ms', '12.4 s', '3 min 05 s', '2 h 07 min' or '3 d 04 h'."""
    if span is None:
        return "—"
    seconds = span.total_seconds() if isinstance(span, timedelta) else float(span)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours:02d} h"


def truncate(value: object, limit: int = MAX_CELL_CHARS) -> str:
    """The value as text, cut to limit characters with an ellipsis."""
    text = "—" if value is None else " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short_id(value: str) -> str:
    """A long id (a uuid4) cut to its first 8 characters, like a short Git hash."""
    return value if len(value) <= 12 else value[:8] + "…"


def shown_of(shown: int, total: int, noun: str) -> str:
    """'showing 50 of 1,234 operations' when truncated, else ''."""
    return f"Showing {count(shown)} of {count(total)} {noun}." if total > shown else ""


def json_text(value: str | None, limit: int = MAX_CELL_CHARS) -> str:
    """JSON object text as 'key: value; key: a, b' for reading; other text as it is, truncated."""
    try:
        parsed = json.loads(value) if value else None
    except ValueError:
        return truncate(value, limit)
    return truncate(plain(parsed) if isinstance(parsed, dict) else value, limit)


def plain(value: object) -> str:
    """A JSON-like value as reading text: 'a, b' for lists, 'key: value; ...' for objects."""
    if isinstance(value, (list, tuple)):
        return ", ".join(plain(v) for v in value)
    if isinstance(value, Mapping):
        return "; ".join(f"{key}: {plain(item)}" for key, item in value.items())
    return str(value)
