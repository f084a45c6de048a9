"""The event timeline: each operation's events in seq order, consecutive events of a type as one row.

Operations follow each other by their first event; within one, a run of consecutive events of
the same type (5,000 inferences between a data access and a compliance check) is one row that
says what the run adds up to, so `audit_closed` comes after the events it closes. A run of one
event shows its details. Past MAX_TIMELINE_ROWS rows the newest are cut, and the table says so.
Function arguments, return values and inference outputs are never shown; data subjects are masked.
"""

from __future__ import annotations

from typing import Any

import duckdb

from secureml.reporting import formatting as fmt
from secureml.reporting.document import Column, Section, Table, Text
from secureml.reporting.source import EVENTS_TABLE

MAX_TIMELINE_ROWS = 300

# Details of a single event, by type.
_EVENT_DETAIL = """
CASE event_type
  WHEN 'data_access' THEN coalesce(dataset_name, '?') || ': ' || coalesce(format('{:,}', num_records), '?')
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
       || coalesce(format('{:,}', event_count), '?') || ' events'
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
    """The timeline: operations by their first event, each one's runs of events in seq order."""
    rows = connection.execute(
        f"""
        WITH ordered AS (
            SELECT *, rowid AS row_id,
                   row_number() OVER (PARTITION BY operation_id ORDER BY seq)
                   - row_number() OVER (PARTITION BY operation_id, event_type ORDER BY seq) AS run
            FROM {EVENTS_TABLE}),
        runs AS (
            SELECT operation_id, any_value(operation_name) AS operation, event_type, count(*) AS n,
                   min(seq) AS first_seq, max(seq) AS last_seq, min(ts) AS first_ts, max(ts) AS last_ts,
                   count(DISTINCT "user") AS users, any_value("user") AS some_user, min(row_id) AS first_row,
                   {_GROUP_DETAIL} AS summary
            FROM ordered GROUP BY operation_id, event_type, run),
        shown AS (
            SELECT *, min(first_ts) OVER (PARTITION BY operation_id) AS operation_began, count(*) OVER () AS total
            FROM runs ORDER BY operation_began, operation_id, first_seq LIMIT {MAX_TIMELINE_ROWS})
        SELECT first_ts, last_ts, operation, operation_id, first_seq, last_seq, event_type, n, users, some_user,
               summary, total,
               CASE WHEN n = 1 THEN (SELECT {_EVENT_DETAIL} FROM {EVENTS_TABLE} e WHERE e.rowid = shown.first_row)
               END AS detail
        FROM shown ORDER BY operation_began, operation_id, first_seq
        """
    ).fetchall()
    total_rows = rows[0][11] if rows else 0
    table = Table(
        "Timeline",
        (
            Column("When (UTC)"),
            Column("Operation"),
            Column("Seq", "right"),
            Column("Event"),
            Column("User"),
            Column("Details", text=True),
        ),
        [_timeline_row(r, i == 0 or rows[i - 1][3] != r[3]) for i, r in enumerate(rows)],
        total_rows,
        empty_text="No events in scope.",
        note=fmt.shown_of(len(rows), total_rows, "timeline rows; narrow the time range to see the rest"),
    )
    intro = Text(
        f"{fmt.count(total_events)} events, operation by operation (named on its first row) in the order it "
        "recorded them (seq). Consecutive events of one type are one row: how many, what they add up to, and "
        "the time of the first. Arguments, return values and model outputs are never shown."
    )
    return Section("Event timeline", (intro, table), new_page=True)


def _timeline_row(row: tuple[Any, ...], first_of_operation: bool) -> tuple[str, ...]:
    """One formatted timeline row from a run of events (the operation named on its first row only)."""
    first_ts, _last, operation, _operation_id, first_seq, last_seq, event_type, n, users, some_user, summary, _, \
        detail = row
    name = fmt.truncate(operation, 60) if first_of_operation else ""
    who = fmt.truncate(some_user or "—", 40) if users <= 1 else f"{fmt.count(users)} users"
    seqs = fmt.count(first_seq) if first_seq == last_seq else f"{fmt.count(first_seq)}–{fmt.count(last_seq)}"
    text = detail if n == 1 else f"{fmt.count(n)} events" + (f": {summary}" if summary else "")
    return (fmt.utc(first_ts), name, seqs, str(event_type), who, fmt.truncate(text or ""))
