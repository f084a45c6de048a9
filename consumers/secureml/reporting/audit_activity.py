"""Summary figures and activity sections (volume, users, datasets, operations) of an audit report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

from secureml.reporting import formatting as fmt
from secureml.reporting.document import BarChart, Column, Facts, Section, Series, Table, Text
from secureml.reporting.source import EVENTS_TABLE

TOP_CATEGORIES = 10
TOP_EVENT_TYPES_OVER_TIME = 6
MAX_TIME_BUCKETS = 60
MAX_OPERATION_NAMES = 25
MAX_RECENT_OPERATIONS = 50
MAX_DATASETS = 25

# Bucket widths for the events-over-time chart, finest first: (SQL interval, width, label format).
_BUCKETS = (
    ("1 minute", timedelta(minutes=1), "%m-%d %H:%M"),
    ("5 minutes", timedelta(minutes=5), "%m-%d %H:%M"),
    ("15 minutes", timedelta(minutes=15), "%m-%d %H:%M"),
    ("1 hour", timedelta(hours=1), "%m-%d %H:%M"),
    ("3 hours", timedelta(hours=3), "%m-%d %H:%M"),
    ("6 hours", timedelta(hours=6), "%m-%d %H:%M"),
    ("12 hours", timedelta(hours=12), "%m-%d %H:%M"),
    ("1 day", timedelta(days=1), "%Y-%m-%d"),
    ("7 days", timedelta(days=7), "%Y-%m-%d"),
    ("30 days", timedelta(days=30), "%Y-%m-%d"),
)


@dataclass(frozen=True)
class Summary:
    """Headline figures of the events in scope."""

    events: int
    operations: int
    users: int
    first_event: datetime | None
    last_event: datetime | None
    data_accesses: int
    records_accessed: int
    datasets: int
    accesses_without_purpose: int
    transformations: int
    trainings: int
    inferences: int
    mean_confidence: float | None
    checks_passed: int
    checks_failed: int
    errors: int
    function_calls: int


def summarize(connection: duckdb.DuckDBPyConnection) -> Summary:
    """The headline figures, in one pass over the staged events."""
    row = connection.execute(
        f"""
        SELECT count(*), count(DISTINCT operation_id), count(DISTINCT "user"), min(ts), max(ts),
               count(*) FILTER (event_type = 'data_access'),
               coalesce(sum(num_records) FILTER (event_type = 'data_access'), 0),
               count(DISTINCT dataset_name) FILTER (event_type = 'data_access'),
               count(*) FILTER (event_type = 'data_access' AND coalesce(trim(purpose), '') = ''),
               count(*) FILTER (event_type = 'data_transformation'),
               count(*) FILTER (event_type = 'model_training'),
               count(*) FILTER (event_type = 'model_inference'),
               avg(confidence) FILTER (event_type = 'model_inference'),
               count(*) FILTER (event_type = 'compliance_check' AND result),
               count(*) FILTER (event_type = 'compliance_check' AND NOT result),
               count(*) FILTER (event_type = 'error'),
               count(*) FILTER (event_type = 'function_call')
        FROM {EVENTS_TABLE}
        """
    ).fetchone()
    assert row is not None  # an aggregate without GROUP BY always returns one row
    return Summary(*row)


def summary_facts(summary: Summary) -> Facts:
    """The headline figures as label/value pairs."""
    return Facts(
        (
            ("Total events", fmt.count(summary.events)),
            ("Operations", fmt.count(summary.operations)),
            ("Users", fmt.count(summary.users)),
            ("First event (UTC)", fmt.utc(summary.first_event)),
            ("Last event (UTC)", fmt.utc(summary.last_event)),
            ("Data accesses", fmt.count(summary.data_accesses)),
            ("Records accessed", fmt.count(summary.records_accessed)),
            ("Datasets accessed", fmt.count(summary.datasets)),
            ("Accesses without a declared purpose", fmt.count(summary.accesses_without_purpose)),
            ("Data transformations", fmt.count(summary.transformations)),
            ("Model trainings", fmt.count(summary.trainings)),
            ("Model inferences", fmt.count(summary.inferences)),
            ("Mean inference confidence", fmt.number(summary.mean_confidence)),
            ("Compliance checks passed", fmt.count(summary.checks_passed)),
            ("Compliance checks failed", fmt.count(summary.checks_failed)),
            ("Errors", fmt.count(summary.errors)),
            ("Audited function calls", fmt.count(summary.function_calls)),
        )
    )


def activity_section(connection: duckdb.DuckDBPyConnection, summary: Summary) -> Section:
    """Charts of event volume: over time, by type and by user."""
    return Section(
        "Activity",
        (
            _events_over_time(connection, summary),
            _ranked_chart(connection, "Events by type", "event_type", "(none)"),
            _ranked_chart(connection, "Events by user", '"user"', "(no user)"),
        ),
        new_page=True,
    )


def datasets_section(connection: duckdb.DuckDBPyConnection) -> Section:
    """The datasets accessed: a chart of the most accessed and a table of all of them."""
    rows = connection.execute(
        f"""
        SELECT dataset_name, count(*) AS accesses, coalesce(sum(num_records), 0),
               count(DISTINCT "user"), count(*) FILTER (coalesce(trim(purpose), '') = '')
        FROM {EVENTS_TABLE} WHERE event_type = 'data_access' AND dataset_name IS NOT NULL
        GROUP BY dataset_name ORDER BY accesses DESC, dataset_name
        """
    ).fetchall()
    top = rows[:TOP_CATEGORIES]
    chart = BarChart(
        "Most accessed datasets" + (f" (top {len(top)} of {len(rows):,})" if len(rows) > len(top) else ""),
        tuple(fmt.truncate(r[0], 40) for r in top),
        (Series("accesses", tuple(float(r[1]) for r in top)),),
        horizontal=True,
        value_label="data_access events",
    )
    table = Table(
        "Datasets accessed",
        (
            Column("Dataset"),
            Column("Accesses", "right"),
            Column("Records", "right"),
            Column("Users", "right"),
            Column("Without purpose", "right"),
        ),
        [(fmt.truncate(r[0], 80), *(fmt.count(n) for n in r[1:])) for r in rows[:MAX_DATASETS]],
        len(rows),
        empty_text="No data_access events in scope.",
        note=fmt.shown_of(min(len(rows), MAX_DATASETS), len(rows), "datasets (most accessed first)"),
    )
    return Section("Data access", (chart, table))


def operations_section(connection: duckdb.DuckDBPyConnection) -> Section:
    """Operations with their status and duration: a roll-up by name and the most recent ones."""
    connection.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _report_operations AS
        SELECT operation_id, any_value(operation_name) AS name,
               coalesce(min(op_start), min(ts)) AS started, max(ts) AS last_event,
               max(ts) FILTER (event_type = 'audit_closed') AS closed_at,
               coalesce(arg_max(status, ts) FILTER (event_type = 'audit_closed'), 'open') AS status,
               count(*) AS events, count(*) FILTER (event_type = 'error') AS errors
        FROM {EVENTS_TABLE} GROUP BY operation_id
        """
    )
    by_name = connection.execute(
        """
        SELECT name, count(*), count(*) FILTER (status = 'completed'),
               count(*) FILTER (status NOT IN ('completed', 'open')), count(*) FILTER (status = 'open'),
               median(epoch(closed_at - started)) FILTER (closed_at IS NOT NULL), sum(events), sum(errors)
        FROM _report_operations GROUP BY name ORDER BY count(*) DESC, name
        """
    ).fetchall()
    recent = connection.execute(
        f"""
        SELECT name, operation_id, started, status, closed_at - started, events, errors, count(*) OVER ()
        FROM _report_operations ORDER BY started DESC, operation_id LIMIT {MAX_RECENT_OPERATIONS}
        """
    ).fetchall()
    total_operations = recent[0][7] if recent else 0
    rollup = Table(
        "Operations by name",
        (
            Column("Operation"),
            Column("Runs", "right"),
            Column("Completed", "right"),
            Column("Other status", "right"),
            Column("Open", "right"),
            Column("Median duration", "right"),
            Column("Events", "right"),
            Column("Errors", "right"),
        ),
        [
            (fmt.truncate(r[0], 80), fmt.count(r[1]), fmt.count(r[2]), fmt.count(r[3]), fmt.count(r[4]),
             fmt.duration(r[5]), fmt.count(r[6]), fmt.count(r[7]))
            for r in by_name[:MAX_OPERATION_NAMES]
        ],
        len(by_name),
        empty_text="No operations in scope.",
        note=fmt.shown_of(min(len(by_name), MAX_OPERATION_NAMES), len(by_name), "operation names"),
    )
    latest = Table(
        "Most recent operations",
        (
            Column("Operation"),
            Column("Operation id"),
            Column("Started (UTC)"),
            Column("Status"),
            Column("Duration", "right"),
            Column("Events", "right"),
            Column("Errors", "right"),
        ),
        [
            (fmt.truncate(r[0], 60), fmt.short_id(r[1]), fmt.utc(r[2]), fmt.truncate(r[3], 30),
             fmt.duration(r[4]) if r[4] is not None else "open", fmt.count(r[5]), fmt.count(r[6]))
            for r in recent
        ],
        total_operations,
        empty_text="No operations in scope.",
        note=fmt.shown_of(len(recent), total_operations, "operations (most recent first)"),
    )
    return Section(
        "Operations",
        (
            Text(
                "Status is the one given to close() (audit_closed); 'open' means no audit_closed event in "
                "scope. Operation ids are shortened to their first 8 characters."
            ),
            rollup,
            latest,
        ),
        new_page=True,
    )


def _events_over_time(connection: duckdb.DuckDBPyConnection, summary: Summary) -> BarChart:
    """Events per time bucket, stacked by the most frequent event types."""
    if summary.first_event is None or summary.last_event is None:
        return BarChart("Events over time", (), ())
    interval, _, label_format = _bucket_for(summary.last_event - summary.first_event)
    rows = connection.execute(
        f"""
        WITH top AS (
            SELECT event_type FROM {EVENTS_TABLE} GROUP BY event_type
            ORDER BY count(*) DESC, event_type LIMIT {TOP_EVENT_TYPES_OVER_TIME}),
        grid AS (
            SELECT unnest(generate_series(time_bucket(INTERVAL '{interval}', min(ts)),
                                          time_bucket(INTERVAL '{interval}', max(ts)),
                                          INTERVAL '{interval}')) AS bucket
            FROM {EVENTS_TABLE}),
        counted AS (
            SELECT time_bucket(INTERVAL '{interval}', ts) AS bucket,
                   CASE WHEN event_type IN (SELECT event_type FROM top) THEN event_type ELSE 'other' END AS kind,
                   count(*) AS n
            FROM {EVENTS_TABLE} GROUP BY ALL)
        SELECT grid.bucket, counted.kind, coalesce(counted.n, 0)
        FROM grid LEFT JOIN counted USING (bucket) ORDER BY grid.bucket
        """
    ).fetchall()
    buckets = sorted({r[0] for r in rows})
    position = {bucket: i for i, bucket in enumerate(buckets)}
    totals: dict[str, list[float]] = {}
    for bucket, kind, n in rows:
        if kind is not None:
            totals.setdefault(kind, [0.0] * len(buckets))[position[bucket]] = float(n)
    kinds = sorted(totals, key=lambda k: (k == "other", -sum(totals[k]), k))
    return BarChart(
        f"Events over time (per {interval}, UTC)",
        tuple(b.strftime(label_format) for b in buckets),
        tuple(Series(kind, tuple(totals[kind])) for kind in kinds),
        stacked=True,
    )


def _bucket_for(span: timedelta) -> tuple[str, timedelta, str]:
    """The finest bucket width that keeps the chart at MAX_TIME_BUCKETS bars or fewer."""
    for bucket in _BUCKETS:
        if span / bucket[1] < MAX_TIME_BUCKETS:
            return bucket
    return _BUCKETS[-1]


def _ranked_chart(connection: duckdb.DuckDBPyConnection, title: str, column: str, missing: str) -> BarChart:
    """A horizontal bar chart of event counts per value of column: the top ones, then 'other'."""
    rows = connection.execute(
        f"SELECT coalesce({column}, '{missing}') AS value, count(*) AS n FROM {EVENTS_TABLE} "
        "GROUP BY value ORDER BY n DESC, value"
    ).fetchall()
    top = rows[:TOP_CATEGORIES]
    shown = title + (f" (top {len(top)} of {len(rows):,})" if len(rows) > len(top) else "")
    return BarChart(
        shown, tuple(fmt.truncate(r[0], 40) for r in top), (Series("events", tuple(float(r[1]) for r in top)),),
        horizontal=True,
    )
