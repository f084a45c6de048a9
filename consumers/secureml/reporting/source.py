"""Turn what the caller passed as `logs` into one DuckDB table of the events in scope.

Three inputs share one aggregation path: a list of event dicts (get_audit_logs) is loaded
through Arrow, a dict of filters runs over the lake's `events` view, and a DuckDB connection
that already has an `events` view is used as it is. Every report query then reads the
temporary table `_report_events`, whose `ts` is a naive UTC TIMESTAMP.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from secureml.audit.config import resolve_config
from secureml.audit.events import MAX_LEVEL, MAX_LONG, boolean, count, json_value, text_list
from secureml.audit.exceptions import AuditValidationError
from secureml.integrity.rowstore import work_directory
from secureml.query import connect
from secureml.query.filters import Selection, parse_time, select_events
from secureml.query.privacy import stored_forms
from secureml.reporting.exceptions import (
    InvalidFiltersError,
    InvalidReportInputError,
    LakeUnavailableError,
)

FILTER_KEYS = ("log_dir", "operation_id", "operation_name", "start_time", "end_time", "event_type", "user")
EVENTS_TABLE = "_report_events"
# The staged events beyond this spill to a work directory under log_dir: a report over 10M events
# must not hold them all in memory.
MEMORY_LIMIT = "256MB"
# Temporary objects a report creates in the connection, dropped when it is done.
TEMP_TABLES = (EVENTS_TABLE, "_report_operations", "_report_requests")

# Columns of the event the report reads (never arguments, return values or inference outputs).
_STRING = pa.string()
_INT = pa.int64()
_FLOAT = pa.float64()
_INPUT_SCHEMA = pa.schema(
    [
        ("timestamp", _STRING),
        ("operation_start", _STRING),
        ("operation_id", _STRING),
        ("operation_name", _STRING),
        ("seq", _INT),
        ("event_type", _STRING),
        ("level", _INT),
        ("user", _STRING),
        ("regulations", pa.list_(_STRING)),
        ("dataset_name", _STRING),
        ("num_records", _INT),
        ("purpose", _STRING),
        ("transformation_type", _STRING),
        ("input_data", _STRING),
        ("output_data", _STRING),
        ("model_type", _STRING),
        ("model_id", _STRING),
        ("confidence", _FLOAT),
        ("check_type", _STRING),
        ("regulation", _STRING),
        ("result", pa.bool_()),
        ("details", _STRING),
        ("request_type", _STRING),
        ("user_id", _STRING),
        ("status", _STRING),
        ("function_name", _STRING),
        ("execution_time", _FLOAT),
        ("error_type", _STRING),
        ("message", _STRING),
        ("event_count", _INT),
    ]
)
_TIMESTAMP_COLUMNS = ("timestamp", "operation_start")
_DETAILED_TYPES = "('compliance_check', 'user_request', 'error', 'audit_closed')"

_STAGE_SQL = f"""
CREATE OR REPLACE TEMP TABLE {EVENTS_TABLE} AS
SELECT timezone('UTC', "timestamp") AS ts, timezone('UTC', operation_start) AS op_start,
       operation_id, operation_name, seq, event_type, level, "user", regulations,
       dataset_name, num_records, purpose, transformation_type, input_data, output_data,
       model_type, model_id, confidence, check_type, regulation, result,
       CASE WHEN event_type IN {_DETAILED_TYPES} THEN details END AS details,
       request_type, user_id, status, function_name, execution_time, error_type, message, event_count
FROM events
"""

# Data subjects are shown as 'us***45': enough to tell requests apart, not enough to identify.
_MASK_MACRO = """
CREATE OR REPLACE TEMP MACRO _mask_subject(x) AS
CASE WHEN x IS NULL THEN NULL
     WHEN length(x) <= 4 THEN '***'
     WHEN length(x) <= 7 THEN left(x, 1) || '***'
     ELSE left(x, 2) || '***' || right(x, 2) END
"""


@dataclass(frozen=True)
class EventScope:
    """The staged events of one report and where they came from."""

    connection: duckdb.DuckDBPyConnection
    filters: dict[str, str]
    description: str
    log_dir: str | None
    from_lake: bool
    start: datetime | None
    end: datetime | None
    event_count: int
    owns_connection: bool
    events: Sequence[Mapping[str, Any]] | None = None  # the dicts a list-built report was given

    def close(self) -> None:
        """Drop what the report staged; close the connection if the scope opened it."""
        if self.owns_connection:
            self.connection.close()
            return
        for table in TEMP_TABLES:
            self.connection.execute(f"DROP TABLE IF EXISTS {table}")
        self.connection.execute("DROP MACRO IF EXISTS _mask_subject")


def open_scope(logs: object) -> EventScope:
    """Stage the events that `logs` (list of dicts, filters dict or DuckDB connection) stands for."""
    if isinstance(logs, Mapping):
        filters = dict(logs)
        return scope_from_connection(connect_lake(filters.get("log_dir")), filters, owns_connection=True)
    if isinstance(logs, duckdb.DuckDBPyConnection):
        return scope_from_connection(logs, {}, description="a DuckDB connection's events view", from_lake=False)
    if isinstance(logs, Sequence) and not isinstance(logs, (str, bytes)):
        return _scope_from_dicts(logs)
    raise InvalidReportInputError(
        f"logs must be the list returned by get_audit_logs(), a dict of its filters (e.g. "
        f"{{'log_dir': 'audit_logs', 'operation_name': ...}}) or a DuckDB connection with an "
        f"'events' view, not {type(logs).__name__}."
    )


def connect_lake(log_dir: object) -> duckdb.DuckDBPyConnection:
    """A connection to the lake under log_dir (None: the configured default), from secureml.query.connect."""
    if log_dir is not None and (not isinstance(log_dir, (str, os.PathLike)) or "\x00" in str(log_dir)):
        raise InvalidFiltersError(f"filter 'log_dir' must be a directory path (a str without NUL), got {log_dir!r:.80}")
    if log_dir is not None and not Path(log_dir).is_dir():
        raise LakeUnavailableError(
            f"The log_dir {str(log_dir)!r} does not exist; pass the directory your AuditTrail writes to "
            "(its log_dir argument or $SECUREML_AUDIT_LOG_DIR)."
        )
    connection = connect(None if log_dir is None else str(log_dir))
    directory = resolve_config(log_dir=None if log_dir is None else str(log_dir), bootstrap_servers="").log_dir
    spill = work_directory(directory, "report")
    weakref.finalize(connection, shutil.rmtree, spill, True)  # DuckDB removes its files on close, not the directory
    connection.execute(f"SET temp_directory = '{str(spill).replace(chr(39), chr(39) * 2)}'")
    connection.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    return connection


def scope_from_connection(
    connection: duckdb.DuckDBPyConnection,
    filters: Mapping[str, object],
    *,
    description: str | None = None,
    from_lake: bool = True,
    owns_connection: bool = False,
) -> EventScope:
    """Stage the rows of the connection's `events` view that match the filters."""
    selection = _selection(filters)
    try:
        connection.execute(_STAGE_SQL + selection.where, selection.params)
    except (duckdb.CatalogException, duckdb.BinderException) as error:
        raise InvalidReportInputError(
            f"The connection cannot be reported on ({error}); it needs a view or table named 'events' with "
            "the audit event columns, such as the one secureml.audit.connect(log_dir) creates."
        ) from error
    log_dir = filters.get("log_dir")
    shown = {key: _show(key, value) for key, value in filters.items() if value is not None}
    return _finish(
        connection,
        shown,
        description or f"the lake at {log_dir if log_dir is not None else 'the default log_dir'}",
        None if log_dir is None else str(log_dir),
        from_lake,
        selection,
        owns_connection,
    )


def first_event_time(connection: duckdb.DuckDBPyConnection, filters: Mapping[str, object]) -> datetime | None:
    """The time of the earliest event matching the filters, or None when there is none."""
    selection = _selection(filters)
    row = connection.execute(f'SELECT min("timestamp") FROM events{selection.where}', selection.params).fetchone()
    return None if row is None or row[0] is None else parse_time(row[0], "timestamp")


def _selection(filters: Mapping[str, object]) -> Selection:
    """Check the filters and translate them; time bounds are inclusive, like get_audit_logs."""
    unknown = sorted(set(filters) - set(FILTER_KEYS))
    if unknown:
        raise InvalidFiltersError(
            f"Unknown filter(s) {', '.join(unknown)}: the report accepts {', '.join(FILTER_KEYS)}."
        )
    try:
        log_dir = filters.get("log_dir")
        directory = None if log_dir is None else Path(str(log_dir))
        return select_events(**{key: value for key, value in filters.items() if key != "log_dir"},
                             where="ReportGenerator",  # a user typed in clear matches its pseudonym too
                             user_forms=stored_forms(filters.get("user"), "user", directory, "ReportGenerator"))
    except AuditValidationError as error:
        raise InvalidFiltersError(f"invalid filter {error.field!r}: {error.rule}") from error


def _scope_from_dicts(logs: Sequence[Any]) -> EventScope:
    """Load a list of event dicts (as get_audit_logs returns them) and stage it."""
    events = _as_dicts(logs)
    columns: dict[str, list[Any]] = {name: [] for name in _INPUT_SCHEMA.names}
    for position, event in enumerate(events):
        for name, values in columns.items():
            values.append(_checked_value(position, name, event.get(name)))
    try:
        table = pa.Table.from_pydict(columns, schema=_INPUT_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise InvalidReportInputError(
            f"The event dicts do not match the audit event schema ({error}); pass the list "
            "returned by get_audit_logs() unchanged, or a dict of its filters."
        ) from error
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")  # times without an offset are UTC, as everywhere else
    connection.register("_report_input", table)
    casts = ", ".join(f'CAST("{c}" AS TIMESTAMPTZ) AS "{c}"' for c in _TIMESTAMP_COLUMNS)
    connection.execute(
        f"CREATE TEMP VIEW events AS SELECT * REPLACE ({casts}) FROM _report_input"
    )
    connection.execute(_STAGE_SQL)
    scope = _finish(connection, {}, f"{len(logs):,} events passed to the report (as get_audit_logs returns them)",
                    None, False, select_events(), True)
    return dataclasses.replace(scope, events=events)


def _as_dicts(logs: Sequence[Any]) -> Sequence[Mapping[str, Any]]:
    """The events, after checking that each one is a mapping."""
    for position, event in enumerate(logs):
        if not isinstance(event, Mapping):
            raise InvalidReportInputError(
                f"logs[{position}] is a {type(event).__name__}, not an event dict; pass the list "
                "returned by get_audit_logs() unchanged."
            )
    return logs


def _checked_value(position: int, name: str, value: Any) -> Any:
    """An event's value in the form its Arrow column takes (JSON text for details, ISO text for times),
    after the rules the audit trail applied when it was logged; InvalidReportInputError names the field."""
    if value is None:
        return None
    field = f"logs[{position}][{name!r}]"
    kind = _INPUT_SCHEMA.field(name).type
    try:
        if name in _TIMESTAMP_COLUMNS:
            return parse_time(value, field).isoformat()
        if name == "details":
            return valid_text(value, field) if isinstance(value, str) else json_value(value, field, "")
        if kind == _INT:
            return count(value, field, "", limit=MAX_LEVEL if name == "level" else MAX_LONG)
        if kind == _FLOAT:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise AuditValidationError(field, f"must be a finite number, got {value!r:.40}")
            return float(value)
        if kind == pa.bool_():
            return boolean(value, field, "")
        if kind == _STRING:
            if not isinstance(value, str):
                raise AuditValidationError(field, f"must be a string, got {type(value).__name__}")
            return valid_text(value, field)
        return text_list(value, field, "")
    except AuditValidationError as error:
        raise InvalidReportInputError(
            f"{field} {error.rule}: pass the list returned by get_audit_logs() unchanged, or a dict of its filters"
        ) from None


def valid_text(value: str, field: str) -> str:
    """A string of valid Unicode (no lone surrogate), empty or not."""
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError as error:
            raise AuditValidationError(field, f"must be valid Unicode text: {value[error.start:error.end]!a} at "
                                       f"index {error.start} is a lone surrogate") from None
    return value


def _show(key: str, value: object) -> str:
    """A filter value as the appendix prints it; times in UTC."""
    if key in ("start_time", "end_time"):
        return parse_time(value, key).isoformat()
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _finish(
    connection: duckdb.DuckDBPyConnection,
    filters: dict[str, str],
    description: str,
    log_dir: str | None,
    from_lake: bool,
    selection: Selection,
    owns_connection: bool,
) -> EventScope:
    """Add the masking macro and count the staged events."""
    connection.execute(_MASK_MACRO)
    row = connection.execute(f"SELECT count(*) FROM {EVENTS_TABLE}").fetchone()
    return EventScope(connection, filters, description, log_dir, from_lake, selection.start, selection.end,
                      int(row[0]) if row else 0, owns_connection)
