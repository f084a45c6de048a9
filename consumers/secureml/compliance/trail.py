"""Record an audit as an audit trail: started, data access, one event per check, closed.

Only counts, column names, check ids and provisions reach the trail; never a value read
from the audited data, and never an exception message (it may quote one).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from secureml.audit import AuditTrail
from secureml.audit.config import ENV_PREFIX
from secureml.audit.events import text
from secureml.audit.exceptions import AuditValidationError

from .exceptions import InvalidArgumentError
from .report import JSON, CheckResult, ComplianceReport

AUDIT_PURPOSE = "compliance_audit"  # the access rules of secureml.alerting recognise it
UNKNOWN_AUDITOR = "secureml-compliance-auditor"


def auditor_identity(user: str | None) -> str:
    """Who an audit's reads are logged as: ``user`` when given, else the OS user running the audit."""
    if user is not None:
        try:
            return text(user, "user", "")
        except AuditValidationError as error:
            raise InvalidArgumentError(f"user must be a non-empty string naming the auditor, or None for the OS "
                                       f"user: it {error.rule}; got {user!r:.80}") from None
    try:
        return getpass.getuser() or UNKNOWN_AUDITOR
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return UNKNOWN_AUDITOR


@dataclass(frozen=True)
class TrailSettings:
    """Where audit trails go; recording is on when a log directory or Kafka brokers are given.

    Like AuditTrail, it also takes them from SECUREML_AUDIT_LOG_DIR and
    SECUREML_AUDIT_BOOTSTRAP_SERVERS. ``user`` is the auditor's identity on every event.
    """

    log_dir: str | os.PathLike[str] | None = None
    bootstrap_servers: str | None = None
    topic: str | None = None
    user: str = UNKNOWN_AUDITOR
    producer_config: Mapping[str, Any] | None = None

    @property
    def enabled(self) -> bool:
        """Return True when audits are to be recorded."""
        configured = (ENV_PREFIX + "LOG_DIR", ENV_PREFIX + "BOOTSTRAP_SERVERS")
        return (
            self.log_dir is not None
            or self.bootstrap_servers is not None
            or any(os.environ.get(name) for name in configured)
        )


def check_details(report: ComplianceReport, check: CheckResult) -> dict[str, JSON]:
    """Return what the trail records about one check: provision, severity, counts, columns."""
    issues = [issue for issue in report.issues if issue.check_id == check.check_id]
    warnings = [warning for warning in report.warnings if warning.check_id == check.check_id]
    columns = sorted({column for issue in issues for column in issue.columns})
    return {
        "article": check.article,
        "severity": check.severity,
        "issues_count": len(issues),
        "warnings_count": len(warnings),
        "columns": list(columns),
        **check.details,
    }


class Recording:
    """One audit being recorded on an open audit trail."""

    def __init__(self, trail: AuditTrail, regulation: str, user: str) -> None:
        self._trail = trail
        self._regulation = regulation
        self._user = user
        self.summary: dict[str, JSON] | None = None

    @property
    def operation_id(self) -> str:
        """Return the id of the audit trail's operation."""
        return self._trail.operation_id

    def data_access(self, dataset_name: str, columns: Sequence[str], num_records: int) -> None:
        """Record that the auditor reads every column of every record, as itself and for a compliance audit."""
        self._trail.log_data_access(
            dataset_name=dataset_name,
            columns_accessed=list(columns),
            num_records=num_records,
            purpose=AUDIT_PURPOSE,
            user=self._user,
        )

    def checks(self, report: ComplianceReport) -> None:
        """Record one compliance check event per check of the report."""
        for check in report.checks:
            self._trail.log_compliance_check(
                check_type=check.check_id,
                regulation=self._regulation,
                result=check.passed,
                details=check_details(report, check),
            )
        self.summary = report.summary()


@contextmanager
def recording(
    settings: TrailSettings, *, operation_name: str, regulation: str, context: Mapping[str, JSON]
) -> Iterator[Recording | None]:
    """Open an audit trail for one audit and close it as completed, or as error and re-raise."""
    if not settings.enabled:
        yield None
        return
    trail = AuditTrail(
        operation_name,
        log_dir=None if settings.log_dir is None else os.fspath(settings.log_dir),
        context=dict(context),
        regulations=[regulation],
        bootstrap_servers=settings.bootstrap_servers,
        topic=settings.topic,
        user=settings.user,
        producer_config=None if settings.producer_config is None else dict(settings.producer_config),
    )
    active = Recording(trail, regulation, settings.user)
    try:
        yield active
    except BaseException as error:
        trail.close(status="error", details={"error_type": type(error).__name__})
        raise
    trail.close(status="completed", details=active.summary)
