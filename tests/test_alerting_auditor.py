"""The compliance auditor's reads: logged with an identity and purpose compliance_audit; no access alert on them."""

from __future__ import annotations

import getpass
import shutil

import pandas as pd
import pytest
from support.alerting import make_alerter, pseudonym_of, published

from conftest import Harness
from secureml.alerting.builtin.access import AUDIT_PURPOSE
from secureml.audit import get_audit_logs
from secureml.compliance import ComplianceAuditor, InvalidArgumentError
from secureml.compliance import trail as compliance_trail

# Every access rule on, set tight: the auditor's read of ssn and diagnosis, 6 records, now, would break each.
ACCESS_RULES = {
    "bulk_access": '{threshold: 1, window: 1h}',
    "sensitive_column_access": '{column_roles: {ssn: [fraud_team], "diagnos*": [clinician]}}',
    "access_outside_hours": '{start: "00:00", end: "00:00", days: [], timezone: UTC}',
    "access_without_user": "{}",
    "access_without_purpose": "{}",
}


def patients() -> pd.DataFrame:
    """Six patient records with a national id and a diagnosis."""
    return pd.DataFrame({"ssn": [f"123-45-678{i}" for i in range(6)], "diagnosis": ["J45", "E11", "I10"] * 2,
                         "age": [34, 45, 91, 29, 52, 38]})


def rules(audit_reads: bool = False) -> str:
    """A rules file with ACCESS_RULES, judging the auditor's reads too when ``audit_reads``."""
    lines = [f"  {rule_id}: {{audit_reads: {str(audit_reads).lower()}, {options[1:]}".replace(", }", "}")
             for rule_id, options in ACCESS_RULES.items()]
    return "rules:\n" + "\n".join(lines) + "\n"


def test_the_auditor_read_is_logged_as_the_os_user_for_a_compliance_audit(embedded: Harness) -> None:
    """By default the audit's data access names the OS user and the purpose the alerting rules recognise."""
    report = ComplianceAuditor("GDPR", log_dir=embedded.log_dir).audit_dataset(patients(), "patients")
    access = [e for e in get_audit_logs(operation_id=report.operation_id, log_dir=embedded.log_dir)
              if e["event_type"] == "data_access"]
    assert [(e["user"], e["purpose"], e["columns_accessed"]) for e in access] == [
        (getpass.getuser(), "compliance_audit", ["ssn", "diagnosis", "age"])]
    assert AUDIT_PURPOSE == compliance_trail.AUDIT_PURPOSE
    named = ComplianceAuditor("GDPR", log_dir=embedded.log_dir, user="dpo-audit-bot").audit_dataset(
        patients(), "patients")
    assert {e["user"] for e in get_audit_logs(operation_id=named.operation_id, log_dir=embedded.log_dir)} == {
        "dpo-audit-bot"}
    with pytest.raises(InvalidArgumentError, match="user must be a non-empty string"):
        ComplianceAuditor("GDPR", log_dir=embedded.log_dir, user=" ")


def test_no_access_rule_fires_on_the_auditor_unless_asked(embedded: Harness) -> None:
    """Every access rule, set tight, stays silent on the audit's read; with audit_reads: true they judge it."""
    report = ComplianceAuditor("GDPR", log_dir=embedded.log_dir).audit_dataset(patients(), "patients")
    assert report.has_issues()  # the audit itself finds the ssn column: that failed check is a real alert
    make_alerter(embedded, rules()).run(once=True)
    fired = [a.rule_id for a in published(embedded)]
    assert fired and set(fired) == {"failed_compliance_check"}, fired
    judged = embedded.log_dir.parent / "judged"  # a second alerter with its own state, on a copy of the log
    shutil.copytree(embedded.log_dir / "log", judged / "log")
    make_alerter(embedded, rules(audit_reads=True), log_dir=judged).run(once=True)
    access_alerts = {a.rule_id: a for a in published(embedded, log_dir=judged) if a.rule_id in ACCESS_RULES}
    assert set(access_alerts) == {"bulk_access", "sensitive_column_access", "access_outside_hours"}
    sensitive = access_alerts["sensitive_column_access"]
    assert sensitive.details["sensitive_columns"] == ["ssn", "diagnosis"]
    user = pseudonym_of(embedded, getpass.getuser())  # alerts name users by their pseudonyms
    assert sensitive.message.startswith(f"User {user!r} read sensitive column(s) ssn, diagnosis")


def test_an_auditor_without_identity_is_still_left_alone(embedded: Harness) -> None:
    """Reads for a compliance audit logged with no user (older auditors) raise no access_without_user alert."""
    from secureml.audit import AuditTrail

    with AuditTrail("compliance_audit_patients", **embedded.options(), user=None) as t:
        t.log_data_access("patients", ["ssn"], 6, "compliance_audit")
        t.log_data_access("patients", ["age"], 6, "churn model")
    make_alerter(embedded).run(once=True)
    assert [(a.rule_id, a.triggers[0].seq) for a in published(embedded)] == [("access_without_user", 2)]
