"""The result of one compliance audit: issues, warnings and the outcome of every check.

Nothing in a report is a raw value read from the audited data: findings carry column
names, counts and at most one masked example (``j***@example.com``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

Severity: TypeAlias = Literal["high", "medium", "low"]
Audited: TypeAlias = Literal["dataset", "model", "pipeline"]
JSON: TypeAlias = str | int | float | bool | None | Sequence["JSON"] | Mapping[str, "JSON"]

SEVERITIES: tuple[Severity, ...] = ("high", "medium", "low")


def highest_severity(severities: list[Severity]) -> Severity | None:
    """Return the most severe of the given severities, or None when there are none."""
    return min(severities, key=SEVERITIES.index, default=None)


@dataclass(frozen=True)
class Issue:
    """A failed requirement, with the provision it breaks and what to do about it."""

    check_id: str
    severity: Severity
    component: str
    article: str
    description: str
    recommendation: str
    columns: tuple[str, ...] = ()
    evidence: Mapping[str, JSON] = field(default_factory=dict)

    def to_dict(self) -> dict[str, JSON]:
        """Return the issue as plain JSON-ready data."""
        return {
            "check_id": self.check_id,
            "severity": self.severity,
            "component": self.component,
            "article": self.article,
            "description": self.description,
            "recommendation": self.recommendation,
            "columns": list(self.columns),
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True)
class Advisory:
    """A warning: something to review that does not by itself break a requirement."""

    check_id: str
    component: str
    message: str
    recommendation: str
    columns: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, JSON]:
        """Return the warning as plain JSON-ready data."""
        return {
            "check_id": self.check_id,
            "component": self.component,
            "message": self.message,
            "recommendation": self.recommendation,
            "columns": list(self.columns),
        }


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: passed or not, the provision it tests, and its counts."""

    check_id: str
    article: str
    passed: bool
    severity: Severity | None
    details: Mapping[str, JSON] = field(default_factory=dict)

    def to_dict(self) -> dict[str, JSON]:
        """Return the check outcome as plain JSON-ready data."""
        return {
            "check_id": self.check_id,
            "article": self.article,
            "passed": self.passed,
            "severity": self.severity,
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class ComplianceReport:
    """The findings of one audit of a dataset, a model configuration or a pipeline."""

    regulation: str
    audited: Audited
    name: str
    issues: tuple[Issue, ...] = ()
    warnings: tuple[Advisory, ...] = ()
    checks: tuple[CheckResult, ...] = ()
    operation_id: str | None = None

    @property
    def passed_checks(self) -> list[str]:
        """Return the ids of the checks that passed, in the order they ran."""
        return [check.check_id for check in self.checks if check.passed]

    def has_issues(self) -> bool:
        """Return True when at least one check failed."""
        return bool(self.issues)

    def has_warnings(self) -> bool:
        """Return True when the audit raised at least one warning."""
        return bool(self.warnings)

    def summary(self) -> dict[str, JSON]:
        """Return the counts an overview needs: issues by severity, warnings, checks."""
        by_severity = Counter(issue.severity for issue in self.issues)
        return {
            "regulation": self.regulation,
            "audited": self.audited,
            "name": self.name,
            "compliant": not self.has_issues(),
            "checks_count": len(self.checks),
            "passed_checks_count": len(self.passed_checks),
            "failed_checks": [check.check_id for check in self.checks if not check.passed],
            "issues_count": len(self.issues),
            "issues_by_severity": {severity: by_severity[severity] for severity in SEVERITIES},
            "warnings_count": len(self.warnings),
        }

    def to_dict(self) -> dict[str, JSON]:
        """Return the whole report as plain JSON-ready data."""
        return {
            "regulation": self.regulation,
            "audited": self.audited,
            "name": self.name,
            "operation_id": self.operation_id,
            "summary": self.summary(),
            "issues": [issue.to_dict() for issue in self.issues],
            "warnings": [warning.to_dict() for warning in self.warnings],
            "passed_checks": list(self.passed_checks),
            "checks": [check.to_dict() for check in self.checks],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """Return the whole report as a JSON document."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def __str__(self) -> str:
        """Return a short human-readable rendering: verdict, then issues and warnings."""
        verdict = "non-compliant" if self.has_issues() else "compliant"
        lines = [
            f"{self.regulation} audit of {self.audited} '{self.name}': {verdict} "
            f"({len(self.passed_checks)} of {len(self.checks)} checks passed)"
        ]
        lines += [
            f"[{issue.severity.upper()}] {issue.check_id} ({issue.article}) {issue.component}: "
            f"{issue.description} -> {issue.recommendation}"
            for issue in self.issues
        ]
        lines += [
            f"[WARNING] {warning.check_id} {warning.component}: {warning.message}"
            for warning in self.warnings
        ]
        return "\n".join(lines)
