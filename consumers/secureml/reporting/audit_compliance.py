"""Compliance sections of an audit report: checks, data-subject requests and alerts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from secureml.reporting import formatting as fmt
from secureml.reporting.document import FAILED_COLOR, PASSED_COLOR, BarChart, Column, Section, Series, Table, Text
from secureml.reporting.source import EVENTS_TABLE

MAX_FAILED_CHECKS = 100
MAX_REQUESTS = 100
MAX_ALERTS = 100
# Statutory answer periods from receipt, and how far an extension reaches (DuckDB intervals):
# GDPR Art. 12(3) one (calendar) month, extendable by two further months; CCPA (Cal. Civ. Code
# § 1798.130(a)(2)) 45 days, extendable once by 45 more. A request counts as extended when one of
# its events has the status 'extended' or details.extended true.
DEADLINES = {"GDPR": ("INTERVAL 1 MONTH", "INTERVAL 3 MONTH"), "CCPA": ("INTERVAL 45 DAY", "INTERVAL 90 DAY")}
REQUEST_STATES = ("overdue", "open", "completed late", "completed", "no deadline")
# Columns of an alerts table (secureml.alerting's Alert) worth showing, in order, and its time columns.
_ALERT_COLUMNS = ("severity", "rule_id", "rule", "regulation", "article", "operation_name", "user_id", "message")
_ALERT_TIME_COLUMNS = ("event_time", "timestamp", "created_at", "raised_at", "time")
_SUBJECT_COLUMNS = ("user_id", "subject_id", "data_subject")


@dataclass(frozen=True)
class RequestCounts:
    """How many data-subject requests are in each deadline state."""

    by_state: dict[str, int]

    @property
    def total(self) -> int:
        """All requests in scope."""
        return sum(self.by_state.values())


def compliance_section(connection: duckdb.DuckDBPyConnection) -> Section:
    """Compliance checks passed and failed by regulation, and the failed ones in detail."""
    by_regulation = connection.execute(
        f"""
        SELECT coalesce(regulation, '(none)') AS reg, count(*) FILTER (result), count(*) FILTER (NOT result)
        FROM {EVENTS_TABLE} WHERE event_type = 'compliance_check' GROUP BY reg ORDER BY reg
        """
    ).fetchall()
    chart = BarChart(
        "Compliance checks by regulation",
        tuple(r[0] for r in by_regulation),
        (
            Series("passed", tuple(float(r[1]) for r in by_regulation), PASSED_COLOR),
            Series("failed", tuple(float(r[2]) for r in by_regulation), FAILED_COLOR),
        ),
        horizontal=True,
        value_label="checks",
    )
    failed = connection.execute(
        f"""
        SELECT ts, operation_name, regulation, check_type, details, count(*) OVER ()
        FROM {EVENTS_TABLE} WHERE event_type = 'compliance_check' AND NOT result
        ORDER BY ts DESC LIMIT {MAX_FAILED_CHECKS}
        """
    ).fetchall()
    total_failed = failed[0][5] if failed else 0
    table = Table(
        "Failed compliance checks",
        (
            Column("Time (UTC)"),
            Column("Operation"),
            Column("Regulation"),
            Column("Check"),
            Column("Details", text=True),
        ),
        [(fmt.utc(r[0]), fmt.truncate(r[1], 60), fmt.truncate(r[2], 30), fmt.truncate(r[3], 60), fmt.json_text(r[4]))
         for r in failed],
        total_failed,
        empty_text="No failed compliance checks in scope.",
        note=fmt.shown_of(len(failed), total_failed, "failed checks (most recent first)"),
    )
    return Section("Compliance checks", (chart, table), new_page=True)


def requests_section(connection: duckdb.DuckDBPyConnection, as_of: datetime) -> tuple[Section, RequestCounts]:
    """Data-subject requests with their statutory deadline, and how many are in each state."""
    connection.execute(_requests_sql(), [as_of.replace(tzinfo=None)])
    counts = RequestCounts(
        dict(connection.execute("SELECT state, count(*) FROM _report_requests GROUP BY state").fetchall())
    )
    rows = connection.execute(
        f"""
        SELECT subject, request_type, regulation, received, deadline, closed_at, last_status, state
        FROM _report_requests
        ORDER BY list_position({list(REQUEST_STATES)}, state), deadline NULLS LAST, received DESC
        LIMIT {MAX_REQUESTS}
        """
    ).fetchall()
    chart = BarChart(
        "Data-subject requests by status",
        tuple(s for s in REQUEST_STATES if counts.by_state.get(s)),
        (Series("requests", tuple(float(counts.by_state[s]) for s in REQUEST_STATES if counts.by_state.get(s))),),
        horizontal=True,
        value_label="requests",
    )
    table = Table(
        "Data-subject requests",
        (
            Column("Subject"),
            Column("Request"),
            Column("Regulation"),
            Column("Received"),
            Column("Deadline"),
            Column("Closed"),
            Column("State (last status)"),
        ),
        [(r[0] or "—", fmt.truncate(r[1], 40), r[2] or "—", fmt.day(r[3]), fmt.day(r[4]), fmt.day(r[5]),
          r[7] if r[6] in (None, "completed") else f"{r[7]} ({fmt.truncate(r[6], 30)})") for r in rows],
        counts.total,
        empty_text="No data-subject requests (user_request events) in scope.",
        note=fmt.shown_of(len(rows), counts.total, "requests (overdue and open first)"),
    )
    explanation = Text(
        "Deadlines as the law sets them, from receipt (details.request_date, else the request's first event): "
        "GDPR one month (Art. 12(3)), extendable by two further months; CCPA 45 days (Cal. Civ. Code "
        "§ 1798.130), extendable once by 45 days. A request with the status 'extended' (or details.extended) "
        f"has the extended deadline. As of {fmt.utc(as_of)} UTC; a 'completed' status closes a request. "
        "Subjects are masked."
    )
    return Section("Data-subject requests", (chart, explanation, table), new_page=True), counts


def alerts_section(connection: duckdb.DuckDBPyConnection, start: datetime | None, end: datetime | None) -> Section:
    """The alerts raised in scope, read from the lake's `alerts` table when it has one."""
    present = connection.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'alerts'"
    ).fetchone()
    if not present or not present[0]:
        return Section("Alerts", (Text("No alert data: the lake has no alerts table.", "muted"),))
    types = {str(r[0]): str(r[1]) for r in connection.execute("DESCRIBE alerts").fetchall()}
    time_column = next((c for c in _ALERT_TIME_COLUMNS if c in types), None)
    shown = [c for c in _ALERT_COLUMNS if c in types] or [c for c in types if c != time_column][:5]
    clauses: list[str] = []
    params: list[object] = []
    when = "NULL"
    if time_column is not None:
        when = _as_timestamptz(time_column, types[time_column])
        for bound, operator in ((start, ">="), (end, "<=")):
            if bound is not None:
                clauses.append(f"{when} {operator} ?")
                params.append(bound)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    selected = ", ".join(
        f'_mask_subject(CAST("{c}" AS VARCHAR))' if c in _SUBJECT_COLUMNS else f'CAST("{c}" AS VARCHAR)'
        for c in shown
    )
    rows = connection.execute(
        f"SELECT {when} AS alert_time, {selected}, count(*) OVER () FROM alerts {where} "
        f"ORDER BY alert_time DESC NULLS LAST LIMIT {MAX_ALERTS}",
        params,
    ).fetchall()
    total = rows[0][-1] if rows else 0
    time_header = (Column("Time (UTC)"),) if time_column else ()
    table = Table(
        "Alerts",
        time_header + tuple(Column(c.replace("_", " ").capitalize(), text=c == "message") for c in shown),
        [((fmt.utc(r[0]),) if time_column else ()) + tuple(fmt.truncate(v) for v in r[1:-1]) for r in rows],
        total,
        empty_text="No alerts in scope.",
        note=fmt.shown_of(len(rows), total, "alerts (most recent first)"),
    )
    return Section("Alerts", (table,))


def _as_timestamptz(column: str, sql_type: str) -> str:
    """SQL for an alert time column as TIMESTAMPTZ, whether stored as one, as naive UTC, as micros or as text."""
    if sql_type.startswith("TIMESTAMP WITH TIME ZONE"):
        return f'"{column}"'
    if sql_type.startswith("TIMESTAMP"):
        return f"timezone('UTC', \"{column}\")"
    if sql_type in ("BIGINT", "INTEGER", "HUGEINT", "UBIGINT"):
        return f'make_timestamptz("{column}")'  # UTC microseconds, as the alerter writes them
    return f'try_cast("{column}" AS TIMESTAMPTZ)'


def _requests_sql() -> str:
    """SQL that builds _report_requests: one row per request, with its deadline state as of ?."""
    deadline_cases = " ".join(
        f"WHEN '{reg}' THEN CASE WHEN extended THEN received + {longer} ELSE received + {period} END"
        for reg, (period, longer) in DEADLINES.items()
    )
    regulation_cases = " ".join(
        f"WHEN bool_or(list_contains(regulations, '{reg}')) THEN '{reg}'" for reg in DEADLINES
    )
    return f"""
    CREATE OR REPLACE TEMP TABLE _report_requests AS
    WITH grouped AS (
        SELECT coalesce(json_extract_string(details, '$.request_id'), user_id || '|' || request_type) AS request,
               _mask_subject(any_value(user_id)) AS subject, any_value(request_type) AS request_type,
               coalesce(min(try_cast(json_extract_string(details, '$.request_date') AS TIMESTAMP)), min(ts))
                   AS received,
               min(ts) FILTER (status = 'completed') AS closed_at,
               arg_max(status, ts) AS last_status,
               coalesce(bool_or(status = 'extended' OR json_extract_string(details, '$.extended') = 'true'), false)
                   AS extended,
               coalesce(any_value(json_extract_string(details, '$.regulation')),
                        CASE {regulation_cases} END) AS regulation
        FROM {EVENTS_TABLE} WHERE event_type = 'user_request' GROUP BY request),
    dated AS (
        SELECT *, CASE regulation {deadline_cases} END AS deadline FROM grouped)
    SELECT *, CASE
        WHEN deadline IS NULL THEN CASE WHEN closed_at IS NULL THEN 'no deadline' ELSE 'completed' END
        WHEN closed_at IS NOT NULL THEN CASE WHEN closed_at <= deadline THEN 'completed' ELSE 'completed late' END
        WHEN $1 > deadline THEN 'overdue'
        ELSE 'open' END AS state
    FROM dated
    """
