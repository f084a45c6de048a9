"""Producer, alerter, materializer, verifier and reporter together: alerts and integrity reach the report."""

from __future__ import annotations

from pypdf import PdfReader

from conftest import Harness
from secureml.alerting import Alerter
from secureml.audit import AuditTrail, connect
from secureml.materializer import materialize
from secureml.reporting import ReportGenerator


def test_alerts_raised_on_the_log_appear_in_the_report(embedded: Harness) -> None:
    """A purpose-less access and a failed check raise alerts that the SQL view and the PDF show, verified."""
    with AuditTrail("e2e", user="svc", **embedded.options()) as trail:
        trail.log_data_access("customers", ["email"], 10, None)
        trail.log_compliance_check("consent", "GDPR", False, {"article": "Art. 7"})
    stats = Alerter(log_dir=embedded.log_dir, bootstrap_servers="").run(once=True)
    materialize(embedded.log_dir)  # lake + a checkpoint signed with this machine's key
    assert stats.alerts >= 2 and stats.events == 4
    rules = {row[0] for row in connect(embedded.log_dir).execute("SELECT rule_id FROM alerts").fetchall()}
    assert {"access_without_purpose", "failed_compliance_check"} <= rules
    pdf = embedded.log_dir / "report.pdf"
    ReportGenerator().generate_audit_report({"log_dir": str(embedded.log_dir)}, pdf, "E2E")
    text = "".join(page.extract_text() for page in PdfReader(pdf).pages)
    assert "access_without_purpose" in text and "failed_compliance_check" in text
    assert "No alert data" not in text
    assert "Verified: the hash chains" in text  # checked with the configured key, not the lake's copy
