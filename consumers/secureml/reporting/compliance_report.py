"""Assemble the Document of a ComplianceAuditor result (a ComplianceReport or its to_dict())."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from secureml.audit.events import json_value
from secureml.audit.exceptions import AuditValidationError
from secureml.reporting import formatting as fmt
from secureml.reporting.document import (
    FAILED_COLOR,
    BarChart,
    Column,
    Document,
    Facts,
    Section,
    Series,
    Table,
    Text,
)
from secureml.reporting.exceptions import InvalidReportInputError

SEVERITIES = ("critical", "high", "medium", "low", "info")
# Columns of each findings table, in order; a column shows when any finding has the key.
ISSUE_KEYS = ("severity", "check", "component", "finding")
WARNING_KEYS = ("check_id", "component", "message", "description", "recommendation")
CHECK_KEYS = ("check_id", "article", "passed", "severity", "details")
TEXT_KEYS = frozenset({"description", "recommendation", "details", "message", "finding"})
LABELS = {"check_id": "Check", "check": "Check (article)", "passed": "Result", "finding": "Finding and recommendation"}
# Keys of the summary already on the cover.
COVER_KEYS = frozenset({"regulation", "audited", "name", "dataset_name"})
MAX_ITEMS = 500


def build_compliance_document(
    report: object,
    *,
    title: str | None,
    logo_path: str | None,
    report_id: str,
    generated_at: datetime,
    version: str,
) -> Document:
    """Cover, summary, charts and tables of issues, warnings and checks."""
    data = _as_dict(report)
    name = str(data.get("name") or data.get("dataset_name") or "unnamed")
    audited = str(data.get("audited") or "dataset")
    regulation = str(data.get("regulation") or "unspecified regulation")
    issues = _by_severity(_records(data.get("issues"), "issues"))
    warnings = _records(data.get("warnings"), "warnings")
    checks = _records(data.get("checks"), "checks")
    passed = [{"check_id": _check_name(item)} for item in _records(data.get("passed_checks"), "passed_checks")]
    severities = Counter(str(i.get("severity", "unknown")).lower() for i in issues)
    verdict = (
        Text(f"Not compliant: {fmt.count(len(issues))} issue(s) to fix before relying on this {audited}.", "bad")
        if issues
        else Text(f"No issues found against {regulation}.", "good")
    )
    cover = Facts(
        (
            (audited.capitalize(), name),
            ("Regulation", regulation),
            ("Result", "compliant" if not issues else f"{fmt.count(len(issues))} issue(s)"),
            ("Issues by severity", _severity_text(severities) or "none"),
            ("Warnings", fmt.count(len(warnings))),
            ("Checks passed", f"{fmt.count(len(passed))} of {fmt.count(len(checks))}" if checks
             else fmt.count(len(passed))),
            ("Generated at (UTC)", fmt.utc(generated_at)),
            ("Report id", report_id),
            ("Generator", f"secureml-audit {version}"),
        )
    )
    summary = data.get("summary")
    summary_blocks: tuple[Text | Facts, ...] = (verdict,)
    if isinstance(summary, Mapping) and summary:
        summary_blocks += (Facts(tuple((_label(k), _value(v)) for k, v in summary.items() if k not in COVER_KEYS)),)
    findings = (
        _items_table("Issues", [_issue_row(i) for i in issues], ISSUE_KEYS, "No issues."),
        _items_table("Warnings", warnings, WARNING_KEYS, "No warnings."),
        _items_table("Checks run", checks, CHECK_KEYS, "")
        if checks
        else _items_table("Passed checks", passed, ("check_id",), "No passed checks recorded."),
    )
    return Document(
        title=title or f"{regulation} Compliance Report: {name}",
        subtitle=f"Compliance audit of a {audited}",
        report_id=report_id,
        generated_at=generated_at,
        version=version,
        cover_facts=cover,
        sections=(
            Section("Summary", summary_blocks),
            Section("Charts", _charts(issues, warnings, len(passed), severities)),
            Section("Findings", findings),
        ),
        logo_path=logo_path,
        subject=f"{regulation} compliance of {audited} {name}",
        keywords=("compliance", regulation),
    )


def _as_dict(report: object) -> Mapping[str, Any]:
    """The report as a mapping (a dict as given, or the result of its to_dict()), once it is known to
    be JSON within the audit trail's limits: nesting depth, valid Unicode."""
    data: object = report
    if not isinstance(report, Mapping):
        to_dict = getattr(report, "to_dict", None)
        data = to_dict() if callable(to_dict) else None
    if isinstance(data, Mapping):
        try:
            json_value(dict(data), "report", "")
        except AuditValidationError as error:
            raise InvalidReportInputError(
                f"The compliance report cannot be written: invalid {error.field!r}: {error.rule}. Pass the "
                "ComplianceReport returned by ComplianceAuditor (or its to_dict())") from None
        return data
    raise InvalidReportInputError(
        f"Cannot read a compliance report from a {type(report).__name__}: pass the ComplianceReport "
        "returned by ComplianceAuditor (anything with to_dict()) or that dict."
    )


def _records(items: object, name: str) -> list[Mapping[str, Any]]:
    """A list of findings as mappings; plain strings (e.g. passed check ids) become {'description': text}."""
    if items is None:
        return []
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        raise InvalidReportInputError(f"The compliance report's {name!r} must be a list, not {type(items).__name__}.")
    return [item if isinstance(item, Mapping) else {"description": item} for item in items]


def _issue_row(issue: Mapping[str, Any]) -> dict[str, Any]:
    """An issue in four columns, so its description and recommendation get the width they need."""
    check = issue.get("check_id") or issue.get("check") or "—"
    article = f" ({issue['article']})" if issue.get("article") else ""
    recommendation = f" Recommendation: {issue['recommendation']}" if issue.get("recommendation") else ""
    return {
        "severity": issue.get("severity"),
        "check": f"{check}{article}",
        "component": issue.get("component"),
        "finding": f"{issue.get('description') or ''}{recommendation}".strip(),
    }


def _check_name(item: Mapping[str, Any]) -> str:
    """The name of a passed check given as an id or as a dict describing it."""
    for key in ("check_id", "check", "description", "name"):
        if item.get(key):
            return str(item[key])
    return fmt.plain(item)


def _by_severity(issues: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Issues ordered from critical to info, unknown severities last."""
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(issues, key=lambda i: rank.get(str(i.get("severity", "")).lower(), len(SEVERITIES)))


def _severity_text(severities: Counter[str]) -> str:
    """'2 high, 1 low' in severity order."""
    ordered = sorted(severities, key=lambda s: (SEVERITIES.index(s) if s in SEVERITIES else len(SEVERITIES), s))
    return ", ".join(f"{severities[s]} {s}" for s in ordered)


def _charts(
    issues: list[Mapping[str, Any]], warnings: list[Mapping[str, Any]], passed: int, severities: Counter[str]
) -> tuple[BarChart, ...]:
    """Outcome of the checks, issues by severity and issues by component."""
    components = Counter(str(i.get("component", "unspecified")) for i in issues).most_common(10)
    severity_order = [s for s in SEVERITIES if s in severities] + sorted(set(severities) - set(SEVERITIES))
    return (
        BarChart(
            "Check outcomes",
            ("checks passed", "issues", "warnings"),
            (Series("count", (float(passed), float(len(issues)), float(len(warnings)))),),
            horizontal=True,
            value_label="",
        ),
        BarChart(
            "Issues by severity",
            tuple(severity_order),
            (Series("issues", tuple(float(severities[s]) for s in severity_order), FAILED_COLOR),),
            horizontal=True,
            value_label="issues",
        ),
        BarChart(
            "Issues by component",
            tuple(fmt.truncate(c, 40) for c, _ in components),
            (Series("issues", tuple(float(n) for _, n in components), FAILED_COLOR),),
            horizontal=True,
            value_label="issues",
        ),
    )


def _items_table(title: str, items: Sequence[Mapping[str, Any]], keys: tuple[str, ...], empty: str) -> Table:
    """A table of findings with the given keys that any finding has, in that order."""
    shown_keys = [k for k in keys if any(k in i for i in items)]
    shown = items[:MAX_ITEMS]
    return Table(
        title,
        tuple(Column(_label(k), text=k in TEXT_KEYS) for k in shown_keys),
        [tuple(_cell(k, i.get(k)) for k in shown_keys) for i in shown],
        len(items),
        empty_text=empty,
        note=fmt.shown_of(len(shown), len(items), title.lower()),
    )


def _label(key: object) -> str:
    """A dict key as a column or fact label."""
    return LABELS.get(str(key), str(key).replace("_", " ").capitalize())


def _cell(key: str, value: object) -> str:
    """A finding's value as cell text; a check's 'passed' flag reads passed or FAILED."""
    if key == "passed" and isinstance(value, bool):
        return "passed" if value else "FAILED"
    return _value(value)


def _value(value: object) -> str:
    """A value as text: yes/no, counts with separators, 'key: value' for structures, truncated."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return fmt.count(value)
    return fmt.truncate(fmt.plain(value), 300) if value is not None else "—"
