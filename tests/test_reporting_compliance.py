"""Compliance reports from ComplianceAuditor results, as PDF and HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from support.reporting import pdf_text

from guide import COMPLIANCE
from secureml.reporting import InvalidReportInputError, ReportGenerator

# The shape the reporting issue describes; ComplianceReport.to_dict() adds check ids, checks and evidence.
RESULT: dict[str, Any] = {
    "dataset_name": "patient_records",
    "regulation": "GDPR",
    "issues": [
        {"severity": "low", "component": "retention", "check": "retention_period", "article": "Art. 5(1)(e)",
         "description": "No retention period declared.", "recommendation": "Declare one."},
        {"severity": "high", "component": "special_categories", "check": "health_data", "article": "Art. 9",
         "description": "Column 'diagnosis' holds health data.", "recommendation": "Pseudonymise or remove it."},
    ],
    "warnings": ["Column 'zip' may be a quasi-identifier."],
    "passed_checks": [{"check": "data_minimization"}, {"check": "consent_recorded"}],
    "summary": {"rows": 1200, "columns": 14},
}


def flat_text(path: str) -> str:
    """The PDF's text with every run of white space made one space (cells wrap)."""
    return " ".join(pdf_text(Path(path)).split())


def test_guide_auditor_result_becomes_a_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guide's ComplianceAuditor example gives a ComplianceReport that renders with every issue, no raw values."""
    monkeypatch.chdir(tmp_path)
    df = pd.DataFrame({"email": ["alice@example.com", "bob@example.org", "carol@example.net"],
                       "diagnosis": ["flu", "asthma", "diabetes"], "age": [34, 51, 92], "zip": ["10115"] * 3})
    scope: dict[str, Any] = {"df": df}
    exec(COMPLIANCE, scope)
    report = scope["dataset_report"]
    text = flat_text(ReportGenerator().generate_compliance_report(report, tmp_path / "c.pdf"))
    assert text.startswith("GDPR Compliance Report: patient_records")
    assert f"Not compliant: {len(report.issues)} issue(s)" in text
    for issue in report.issues:
        assert issue.check_id in text
    assert f"Checks passed {len(report.passed_checks)} of {len(report.checks)}" in text
    assert "alice@example.com" not in text and "diabetes" not in text


def test_compliance_pdf_lists_issues_by_severity(tmp_path: Path) -> None:
    """A result dict becomes a PDF: verdict, figures, charts, issues (high first), warnings, passed checks."""
    text = flat_text(ReportGenerator().generate_compliance_report(RESULT, tmp_path / "c.pdf"))
    assert text.startswith("GDPR Compliance Report: patient_records")
    assert "Not compliant: 2 issue(s)" in text and "1 high, 1 low" in text
    assert "Issues by severity" in text and "Check outcomes" in text
    assert text.index("Column 'diagnosis' holds health data.") < text.index("No retention period declared.")
    assert "Column 'zip' may be a quasi-identifier." in text and "consent_recorded" in text
    assert "Rows 1,200" in text


def test_compliance_html_and_no_charts(tmp_path: Path) -> None:
    """HTML gets Plotly charts, include_charts=False none."""
    generator = ReportGenerator()
    html = Path(generator.generate_compliance_report(RESULT, tmp_path / "c.html", title="Patients")).read_text()
    assert html.count("Plotly.newPlot(") == 3 and "<title>Patients</title>" in html
    bare = Path(generator.generate_compliance_report(RESULT, tmp_path / "b.html", include_charts=False)).read_text()
    assert "Plotly" not in bare and "Pseudonymise or remove it." in bare


def test_clean_result_says_compliant(tmp_path: Path) -> None:
    """A result without issues reads as compliant and lists what passed."""
    clean = {"name": "d", "regulation": "CCPA", "issues": [], "warnings": [], "passed_checks": ["opt_out"]}
    text = flat_text(ReportGenerator().generate_compliance_report(clean, tmp_path / "c.pdf"))
    assert "No issues found against CCPA." in text and "No issues." in text and "opt_out" in text


def test_unusable_result_is_rejected(tmp_path: Path) -> None:
    """Something that is neither a dict nor has to_dict(), or has issues that are not a list, is refused."""
    with pytest.raises(InvalidReportInputError, match="to_dict"):
        ReportGenerator().generate_compliance_report(42, tmp_path / "c.pdf")
    with pytest.raises(InvalidReportInputError, match="'issues' must be a list"):
        ReportGenerator().generate_compliance_report({"issues": "many"}, tmp_path / "c.pdf")
