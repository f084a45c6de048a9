"""What a check is, and the runner that turns check outcomes into a report.

A check is a pure function from an audit context to an :class:`Outcome`; it reports
findings without knowing its own id or citation. The runner runs the checks that apply
to the regulation (those that cite a provision of it) and stamps each finding with the
check id and the provision.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .report import (
    JSON,
    Advisory,
    Audited,
    CheckResult,
    ComplianceReport,
    Issue,
    Severity,
    highest_severity,
)

ContextT = TypeVar("ContextT")


@dataclass(frozen=True)
class Finding:
    """A failed requirement as a check reports it; ``article`` overrides the check's."""

    severity: Severity
    component: str
    description: str
    recommendation: str
    columns: tuple[str, ...] = ()
    evidence: Mapping[str, JSON] = field(default_factory=dict)
    article: str | None = None


@dataclass(frozen=True)
class Advice:
    """A warning as a check reports it."""

    component: str
    message: str
    recommendation: str
    columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What one check found: findings (it failed if any), warnings, and counts."""

    findings: tuple[Finding, ...] = ()
    advice: tuple[Advice, ...] = ()
    details: Mapping[str, JSON] = field(default_factory=dict)


@dataclass(frozen=True)
class Check(Generic[ContextT]):
    """One check: its id, the provision it tests per regulation, and its function."""

    id: str
    articles: Mapping[str, str]
    run: Callable[[ContextT], Outcome]


def only_when(
    applies: Callable[[ContextT], bool], reason: str
) -> Callable[[Callable[[ContextT], Outcome]], Callable[[ContextT], Outcome]]:
    """Make a check pass as not applicable, for ``reason``, when ``applies`` is false."""

    def decorate(check: Callable[[ContextT], Outcome]) -> Callable[[ContextT], Outcome]:
        @functools.wraps(check)
        def run(context: ContextT) -> Outcome:
            if not applies(context):
                return Outcome(details={"applicable": False, "reason": reason})
            return check(context)

        return run

    return decorate


def undeclared(where: str, severity: Severity, why: str, recommendation: str) -> Outcome:
    """Report a declaration (``where``, e.g. ``metadata['purpose']``) that is required but absent."""
    finding = Finding(severity, where, f"{where} is not declared: {why}", recommendation)
    return Outcome(findings=(finding,), details={"declared": False})


def run_checks(
    checks: Sequence[Check[ContextT]],
    context: ContextT,
    *,
    regulation: str,
    audited: Audited,
    name: str,
) -> ComplianceReport:
    """Run every check that applies to ``regulation`` and collect the results in a report."""
    issues: list[Issue] = []
    warnings: list[Advisory] = []
    results: list[CheckResult] = []
    for check in checks:
        article = check.articles.get(regulation)
        if article is None:
            continue
        outcome = check.run(context)
        issues += [
            Issue(
                check_id=check.id,
                severity=finding.severity,
                component=finding.component,
                article=finding.article or article,
                description=finding.description,
                recommendation=finding.recommendation,
                columns=finding.columns,
                evidence=finding.evidence,
            )
            for finding in outcome.findings
        ]
        warnings += [
            Advisory(check.id, advice.component, advice.message, advice.recommendation, advice.columns)
            for advice in outcome.advice
        ]
        results.append(
            CheckResult(
                check_id=check.id,
                article=article,
                passed=not outcome.findings,
                severity=highest_severity([finding.severity for finding in outcome.findings]),
                details=outcome.details,
            )
        )
    return ComplianceReport(
        regulation=regulation,
        audited=audited,
        name=name,
        issues=tuple(issues),
        warnings=tuple(warnings),
        checks=tuple(results),
    )
