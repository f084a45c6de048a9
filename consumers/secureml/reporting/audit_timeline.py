"""The event timeline: events grouped per time bucket and event type, never a raw dump.

A group of one event shows that event's details; a larger group shows what its events add up
to. The bucket grows until the timeline fits MAX_TIMELINE_ROWS, then the newest rows are cut.
Function arguments, return values and inference outputs are never shown; data subjects are masked.
"""

from __future__ import annotations

from typing import Any

import duckdb

from secureml.reporting import formatting as fmt
from secureml.reporting.document import Column, Section, Table, Text
from secureml.reporting.source import EVENTS_TABLE

MAX_TIMELINE_ROWS = 300
# (bucket, how a bucket's start is written), finest first.
_BUCKETS = (
    ("1 second", "%Y-%m-%d %H:%M:%S"),
    ("1 minute", "%Y-%m-%d %H:%M"),
    ("15 minutes", "%Y-%m-%d %H:%M"),
    ("1 hour", "%Y-%m-%d %H:%M"),
    ("6 hours", "%Y-%m-%d %H:%M"),
    ("1 day", "%Y-%m-%d"),
    ("7 days", "%Y-%m-%d"),
    ("30 days", "%Y-%m-%d"),
)

# Details of a single event, by type.
_EVENT_DETAIL = """
CASE event_type
  WHEN 'data_access' THEN coalesce(dataset_name, '?') || ': ' || coalesce(CAST(num_records AS VARCHAR), '?')
       || ' records, purpose ' || coalesce(nullif(trim(purpose), ''), 'NOT DECLARED')
  WHEN 'data_transformation' THEN coalesce(transformation_type, '?') || ': ' || coalesce(input_data, '?')
       || ' -> ' || coalesce(output_data, '?')
  WHEN 'model_training' THEN coalesce(model_type, '?') || ' on ' || coalesce(dataset_name, '?')
  WHEN 'model_inference' THEN 'model ' || coalesce(model_id, '?') || ', confidence '
       || coalesce(CAST(round(confidence, 3) AS VARCHAR), '-')
  WHEN 'compliance_check' THEN coalesce(regulation, '?') || ' ' || coalesce(check_type, '?') || ': '
       || CASE WHEN result THEN 'passed' ELSE 'FAILED' END
  WHEN 'user_request' THEN coalesce(request_type, '?') || ' from ' || coalesce(_mask_subject(user_id), '?')
       || ': ' || coalesce(status, '?')
  WHEN 'function_call' THEN coalesce(function_name, '?')
  WHEN 'function_return' THEN coalesce(function_name, '?') || ' in '
       || coalesce(CAST(round(execution_time, 3) AS VARCHAR), '?') || ' s'
  WHEN 'error' THEN coalesce(error_type, '?') || ': ' || coalesce(message, '')
  WHEN 'audit_closed' THEN 'status ' || coalesce(status, '?') || ', '
       || coalesce(CAST(event_count AS VARCHAR), '?') || ' events'
  ELSE '' END
"""

# What a group of several events of one type adds up to.
_GROUP_DETAIL = """
CASE event_type
  WHEN 'data_access' THEN format('{:,} records from {} dataset(s)', coalesce(sum(num_records), 0),
       count(DISTINCT dataset_name))
  WHEN 'model_inference' THEN format('{} model(s), mean confidence {}', count(DISTINCT model_id),
       coalesce(CAST(round(avg(confidence), 3) AS VARCHAR), '-'))
  WHEN 'compliance_check' THEN format('{:,} passed, {:,} FAILED', count(*) FILTER (result),
       count(*) FILTER (NOT result))
  WHEN 'user_request' THEN format('{} request type(s)', count(DISTINCT request_type))
  WHEN 'function_return' THEN format('mean {} s', CAST(round(avg(execution_time), 3) AS VARCHAR))
  WHEN 'error' THEN format('{} error type(s)', count(DISTINCT error_type))
  ELSE '' END
"""


def timeline_section(connection: duckdb.DuckDBPyConnection, total_events: int) -> Section:
    """The timeline at the finest bucket that fits, oldest first."""
    bucket, label_format = _fitting_bucket(connection)
    rows = connection.execute(
        f"""
        WITH groups AS (
            SELECT time_bucket(INTERVAL '{bucket}', ts) AS bucket, event_type, count(*) AS n, min(ts) AS first_ts,
                   min(rowid) AS first_row, count(DISTINCT operation_name) AS operations,
                   any_value(operation_name) AS some_operation, count(DISTINCT "user") AS users,
                   any_value("user") AS some_user, {_GROUP_DETAIL} AS summary
            FROM {EVENTS_TABLE} GROUP BY 1, 2),
        shown AS (
            SELECT *, count(*) OVER () AS total FROM groups ORDER BY bucket, first_ts, event_type
            LIMIT {MAX_TIMELINE_ROWS})
        SELECT bucket, event_type, n, first_ts, operations, some_operation, users, some_user, summary, total,
               CASE WHEN n = 1 THEN (SELECT {_EVENT_DETAIL} FROM {EVENTS_TABLE} e WHERE e.rowid = shown.first_row)
               END AS detail
        FROM shown ORDER BY bucket, first_ts, event_type
        """
    ).fetchall()
    total_groups = rows[0][9] if rows else 0
    table = Table(
        "Timeline",
        (
            Column("When (UTC)"),
            Column("Operation"),
            Column("Event"),
            Column("Count", "right"),
            Column("User"),
            Column("Details", text=True),
        ),
        [_timeline_row(r, label_format) for r in rows],
        total_groups,
        empty_text="No events in scope.",
        note=fmt.shown_of(len(rows), total_groups, "timeline rows; narrow the time range to see the rest"),
    )
    intro = Text(
        f"{fmt.count(total_events)} events grouped per {bucket} and event type; a group of one event shows "
        "its exact time and details. Arguments, return values and model outputs are never shown."
    )
    return Section("Event timeline", (intro, table), new_page=True)


def _fitting_bucket(connection: duckdb.DuckDBPyConnection) -> tuple[str, str]:
    """The finest bucket whose timeline has at most MAX_TIMELINE_ROWS rows, else the coarsest."""
    counts = ", ".join(
        f"count(DISTINCT (time_bucket(INTERVAL '{b}', ts), event_type))" for b, _ in _BUCKETS
    )
    row = connection.execute(f"SELECT {counts} FROM {EVENTS_TABLE}").fetchone() or ()
    return next((b for b, n in zip(_BUCKETS, row) if n <= MAX_TIMELINE_ROWS), _BUCKETS[-1])


def _timeline_row(row: tuple[Any, ...], label_format: str) -> tuple[str, ...]:
    """One formatted timeline row from a group."""
    bucket, event_type, n, first_ts, operations, some_operation, users, some_user, summary, _, detail = row
    operation = fmt.truncate(some_operation, 60) if operations == 1 else f"{operations} operations"
    who = fmt.truncate(some_user or "—", 40) if users <= 1 else f"{users} users"
    if n == 1:
        return (fmt.utc(first_ts), operation, str(event_type), "1", who, fmt.truncate(detail))
    return (bucket.strftime(label_format), operation, str(event_type), fmt.count(n), who, fmt.truncate(summary or ""))
