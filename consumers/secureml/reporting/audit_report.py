"""Assemble the audit report Document from the staged events of one scope."""

from __future__ import annotations

from datetime import datetime

from secureml.reporting import formatting as fmt
from secureml.reporting.audit_activity import (
    Summary,
    activity_section,
    datasets_section,
    operations_section,
    summarize,
    summary_facts,
)
from secureml.reporting.audit_compliance import RequestCounts, alerts_section, compliance_section, requests_section
from secureml.reporting.audit_timeline import timeline_section
from secureml.reporting.document import Column, Document, Facts, Section, Table, Text
from secureml.reporting.integrity import integrity_section
from secureml.reporting.progress import Progress
from secureml.reporting.source import EVENTS_TABLE, EventScope

MAX_SCOPE_NAMES = 5


def build_audit_document(
    scope: EventScope,
    *,
    title: str,
    logo_path: str | None,
    report_id: str,
    generated_at: datetime,
    version: str,
    progress: Progress,
) -> Document:
    """Every section of the audit report, queried from the scope's staged events."""
    connection = scope.connection
    as_of = min(scope.end, generated_at) if scope.end is not None else generated_at
    summary = summarize(connection)
    integrity, integrity_status = integrity_section(scope.from_lake, scope.log_dir, scope.events)
    progress.step("verified integrity" if integrity_status != "not verified" else "summarised events")
    requests, request_counts = requests_section(connection, as_of)
    sections: tuple[Section, ...] = (
        Section("Summary", (_highlights(summary, request_counts), summary_facts(summary))),
        integrity,
        activity_section(connection, summary),
        datasets_section(connection),
        compliance_section(connection),
        requests,
        alerts_section(connection, scope.start, scope.end),
        operations_section(connection),
    )
    progress.step("aggregated charts and tables")
    sections += (timeline_section(connection, summary.events), _appendix(scope, report_id))
    progress.step("built the timeline")
    regulations = [
        r[0]
        for r in connection.execute(
            f"SELECT DISTINCT r FROM (SELECT unnest(regulations) AS r FROM {EVENTS_TABLE} "
            f"UNION ALL SELECT regulation FROM {EVENTS_TABLE}) WHERE r IS NOT NULL ORDER BY r"
        ).fetchall()
    ]
    cover = Facts(
        (
            ("Period (UTC)", _period(scope, summary)),
            ("Scope", _scope_text(scope)),
            ("Regulations", ", ".join(regulations) or "none recorded"),
            ("Events", fmt.count(summary.events)),
            ("Integrity", integrity_status),
            ("Generated at (UTC)", fmt.utc(generated_at)),
            ("Report id", report_id),
            ("Generator", f"secureml-audit {version}"),
        )
    )
    return Document(
        title=title,
        subtitle="Audit trail report",
        report_id=report_id,
        generated_at=generated_at,
        version=version,
        cover_facts=cover,
        sections=sections,
        logo_path=logo_path,
        subject=f"Audit report over {fmt.count(summary.events)} events",
        keywords=("audit", "compliance", *regulations),
    )


def _highlights(summary: Summary, requests: RequestCounts) -> Text:
    """One line naming what needs attention, or saying that nothing does."""
    problems = [
        f"{what}: {fmt.count(n)}"
        for n, what in (
            (summary.checks_failed, "failed compliance checks"),
            (requests.by_state.get("overdue", 0), "overdue data-subject requests"),
            (requests.by_state.get("completed late", 0), "data-subject requests completed late"),
            (summary.accesses_without_purpose, "data accesses without a declared purpose"),
            (summary.errors, "errors"),
        )
        if n
    ]
    if problems:
        return Text("Needs attention: " + "; ".join(problems) + ".", "bad")
    return Text("No failed checks, overdue requests, undeclared purposes or errors in scope.", "good")


def _period(scope: EventScope, summary: Summary) -> str:
    """The period the report covers: the time filters when given, else first to last event."""
    start = scope.start or summary.first_event
    end = scope.end or summary.last_event
    if start is None and end is None:
        return "no events"
    return f"{fmt.utc(start)} to {fmt.utc(end)}"


def _scope_text(scope: EventScope) -> str:
    """Where the events came from and which operations they belong to."""
    names = scope.connection.execute(
        f"SELECT operation_name, count(*) OVER () FROM {EVENTS_TABLE} GROUP BY operation_name "
        f"ORDER BY count(*) DESC, operation_name LIMIT {MAX_SCOPE_NAMES}"
    ).fetchall()
    total = names[0][1] if names else 0
    listed = ", ".join(fmt.truncate(n[0], 50) for n in names)
    more = f" and {fmt.count(total - len(names))} more" if total > len(names) else ""
    operations = f"; operations: {listed}{more}" if names else ""
    return f"{scope.description}{operations}"


def _appendix(scope: EventScope, report_id: str) -> Section:
    """The filters and source used, so anyone can rerun the same selection."""
    filters = Table(
        "Filters used",
        (Column("Filter"), Column("Value", text=True)),
        [(key, fmt.truncate(value)) for key, value in sorted(scope.filters.items())],
        len(scope.filters),
        empty_text="No filters: every event of the source is in scope.",
    )
    notes = Text(
        f"Report {report_id} read {fmt.count(scope.event_count)} events from {scope.description}. Times are UTC; "
        "time filters include both ends. Rerun the same selection with "
        "get_audit_logs(**filters) or over the lake's events view in DuckDB."
    )
    return Section("Appendix: selection", (notes, filters), new_page=True)
