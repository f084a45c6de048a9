"""ReportGenerator: the user guide's entry point for audit and compliance reports."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

from secureml.audit.exceptions import naming_the_call
from secureml.reporting.audit_report import build_audit_document
from secureml.reporting.compliance_report import build_compliance_document
from secureml.reporting.document import without_charts
from secureml.reporting.output import check_flag, check_logo, check_output, check_title, write_atomically
from secureml.reporting.progress import Progress
from secureml.reporting.source import EventScope, open_scope

DEFAULT_TITLE = "Audit Trail Report"


class ReportGenerator:
    """Writes audit and compliance reports as PDF (ReportLab) or self-contained HTML (Plotly)."""

    def __init__(self, *, progress: bool | None = None) -> None:
        """progress: True/False forces progress lines on stderr; None shows them for large reports."""
        self._progress = progress

    @naming_the_call("ReportGenerator.generate_audit_report")
    def generate_audit_report(
        self,
        logs: object,
        output_file: str | os.PathLike[str],
        title: str = DEFAULT_TITLE,
        logo_path: str | os.PathLike[str] | None = None,
        include_charts: bool = True,
    ) -> str:
        """Write an audit report and return its path; the format follows the extension (.pdf, .html).

        logs is the list get_audit_logs() returned, a dict of its filters (log_dir, operation_id,
        operation_name, start_time, end_time, event_type, user; run in DuckDB over the lake, so
        no event becomes a Python dict), or a DuckDB connection with an `events` view.
        """
        path = check_output(output_file)
        logo = check_logo(logo_path)
        title = check_title(title)  # type: ignore[assignment]  # a str: not optional here
        include_charts = check_flag(include_charts, "include_charts")
        progress = Progress(self._progress)
        scope = open_scope(logs)
        try:
            written = write_audit_report(scope, path, title=title, logo_path=logo, include_charts=include_charts,
                                         progress=progress)
        finally:
            scope.close()
        return str(written)

    @naming_the_call("ReportGenerator.generate_compliance_report")
    def generate_compliance_report(
        self,
        report: object,
        output_file: str | os.PathLike[str],
        title: str | None = None,
        logo_path: str | os.PathLike[str] | None = None,
        include_charts: bool = True,
    ) -> str:
        """Write a ComplianceAuditor result (a dict or anything with to_dict()) and return its path."""
        path = check_output(output_file)
        logo = check_logo(logo_path)
        title = check_title(title, optional=True)
        include_charts = check_flag(include_charts, "include_charts")
        document = build_compliance_document(
            report, title=title, logo_path=logo, report_id=new_report_id(), generated_at=_now(),
            version=library_version(),
        )
        return str(write_atomically(document if include_charts else without_charts(document), path).absolute())


def write_audit_report(
    scope: EventScope,
    path: Path,
    *,
    title: str,
    logo_path: str | None,
    include_charts: bool,
    progress: Progress,
    report_id: str | None = None,
) -> Path:
    """Build the audit report of a staged scope and write it atomically to a checked path."""
    progress.size(scope.event_count, scope.description)
    document = build_audit_document(
        scope, title=title, logo_path=logo_path, report_id=report_id or new_report_id(), generated_at=_now(),
        version=library_version(), progress=progress,
    )
    written = write_atomically(document if include_charts else without_charts(document), path)
    progress.step(f"wrote {written}")
    return written.absolute()


def new_report_id() -> str:
    """A short random id printed on every page of one report."""
    return f"R-{uuid.uuid4().hex[:12].upper()}"


def library_version() -> str:
    """The installed secureml-audit version, or 'source' when running from a checkout."""
    try:
        return package_version("secureml-audit")
    except PackageNotFoundError:
        return "source"


def _now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)
