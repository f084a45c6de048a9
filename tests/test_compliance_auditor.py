"""ComplianceAuditor: findings on real data in DuckDB, and the audit trail each audit leaves."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from conftest import Harness
from guide import COMPLIANCE
from secureml.audit import get_audit_logs
from secureml.compliance import (
    ComplianceAuditor,
    ComplianceError,
    ComplianceReport,
    InvalidArgumentError,
    UnsupportedDatasetError,
)
from secureml.compliance.vocabulary import classify_column

NAMES = ["John Smith", "Mary Johnson", "Wei Chen", "Olga Petrova", "Carlos Diaz", "Emma Brown"]
EMAILS = ["john.smith@example.com", "mary.j@example.org", "wei.chen@example.net",
          "olga@example.com", "carlos.diaz@example.org", "emma.b@example.com"]
SSNS = ["123-45-6789", "234-56-7890", "345-67-8901", "456-78-9012", "567-89-0123", "678-90-1234"]
PHONES = ["(555) 123-4567", "555-234-5678", "+1 555 345 6789", "555.456.7890", "555-567-8901",
          "(555) 678-9012"]


def patients() -> pd.DataFrame:
    """Six patient records: direct identifiers, names and quasi-identifiers."""
    return pd.DataFrame({
        "full_name": NAMES,
        "email": EMAILS,
        "ssn": SSNS,
        "phone": PHONES,
        "age": [34, 45, 91, 29, 52, 38],
        "zip": ["02134", "10001", "94105", "60601", "73301", "98101"],
        "gender": ["M", "F", "M", "F", "M", "F"],
    })


def found(report: ComplianceReport, check_id: str) -> dict[str, set[str]]:
    """Return, per kind of personal data, the columns a check's issues name."""
    kinds: dict[str, set[str]] = {}
    for issue in report.issues:
        if issue.check_id == check_id:
            kind = str(issue.evidence.get("kind", check_id))
            kinds.setdefault(kind, set()).update(issue.columns)
    return kinds


def luhn_check_digit(digits: str) -> int:
    """Return the digit that makes ``digits`` + it pass the Luhn check."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return (10 - total % 10) % 10


def test_user_guide_example_runs_unchanged_and_records_a_trail(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The guide's example finds e-mails, SSNs and names and leaves started, access, checks, closed."""
    monkeypatch.chdir(tmp_path)
    harness.use_environment(monkeypatch)
    scope: dict[str, Any] = {"df": patients()}

    exec(COMPLIANCE, scope)  # the guide's text, verbatim (checked in test_guide_examples)
    harness.sync()

    df, dataset_report = scope["df"], scope["dataset_report"]
    identifiers = found(dataset_report, "direct_identifiers")
    assert identifiers["email"] == {"email"} and identifiers["national_id"] == {"ssn"}
    assert identifiers["phone"] == {"phone"}
    assert found(dataset_report, "person_names")["person_name"] == {"full_name"}
    logs = get_audit_logs(operation_id=dataset_report.operation_id, log_dir="audit_logs")
    checks = dataset_report.checks
    assert [log["event_type"] for log in logs] == (
        ["audit_started", "data_access"] + ["compliance_check"] * len(checks) + ["audit_closed"]
    )
    assert logs[0]["operation_name"] == "compliance_audit_patient_records"
    assert logs[0]["regulations"] == ["GDPR"]
    access = logs[1]
    assert access["dataset_name"] == "patient_records" and access["columns_accessed"] == list(df.columns)
    assert access["num_records"] == 6 and access["purpose"] == "compliance_audit"
    recorded = [(log["check_type"], log["regulation"], log["result"]) for log in logs[2:-1]]
    assert recorded == [(check.check_id, "GDPR", check.passed) for check in checks]
    assert ("direct_identifiers", "GDPR", False) in recorded
    assert logs[2]["details"]["article"] == "Art. 4(1), Art. 25(1)"
    assert logs[-1]["status"] == "completed" and logs[-1]["details"] == dataset_report.summary()


def test_dataset_without_personal_data_has_no_high_severity_issue() -> None:
    """Sensor readings hold no personal data: no issue at all, and no high-severity one."""
    readings = pd.DataFrame({
        "sensor": [f"S-{i % 4:03d}" for i in range(200)],
        "reading_time": pd.date_range("2024-01-01", periods=200, freq="min"),
        "temperature": [20.0 + (i % 7) * 0.5 for i in range(200)],
        "humidity": [40 + i % 11 for i in range(200)],
        "status": ["ok" if i % 9 else "fault" for i in range(200)],
    })

    report = ComplianceAuditor("GDPR").audit_dataset(readings, "sensor_readings")

    assert not [issue for issue in report.issues if issue.severity == "high"]
    assert not report.has_issues() and report.summary()["compliant"] is True
    assert report.operation_id is None


INPUT_TYPES: dict[str, Callable[[pa.Table], Any]] = {
    "pandas": lambda table: table.to_pandas(),
    "pyarrow": lambda table: table,
    "polars": pl.from_arrow,
    "duckdb": lambda table: duckdb.connect().from_arrow(table),
}


@pytest.mark.parametrize("input_type", INPUT_TYPES)
def test_every_input_type_gives_the_same_findings(input_type: str) -> None:
    """pandas, pyarrow, Polars and a DuckDB relation over the same data give the same report."""
    table = pa.Table.from_pandas(patients(), preserve_index=False)
    auditor = ComplianceAuditor("GDPR")
    expected = auditor.audit_dataset(table.to_pandas(), "patients").to_dict()

    report = auditor.audit_dataset(INPUT_TYPES[input_type](table), "patients")

    assert report.to_dict() == expected
    assert found(report, "direct_identifiers").keys() == {"email", "national_id", "phone"}


def test_duckdb_relation_is_queried_on_its_own_connection_and_left_unchanged() -> None:
    """A relation on a DuckDB table is queried in place, and its connection is left unchanged."""
    connection = duckdb.connect()
    connection.execute("CREATE TABLE people AS SELECT * FROM (VALUES ('a@example.com', 30)) t(email, age)")

    report = ComplianceAuditor("CCPA").audit_dataset(connection.table("people"), "people")

    assert found(report, "direct_identifiers") == {"email": {"email"}}
    assert connection.sql("SELECT table_name FROM information_schema.tables").fetchall() == [("people",)]


def test_luhn_valid_card_is_found_and_a_failing_number_is_not() -> None:
    """A card number passing Luhn is reported; random 16-digit numbers failing Luhn are not."""
    rng = random.Random(7)
    failing = []
    for _ in range(50):
        body = "4" + "".join(rng.choice("0123456789") for _ in range(14))
        failing.append(body + str((luhn_check_digit(body) + 1) % 10))
    auditor = ComplianceAuditor("GDPR")

    valid = auditor.audit_dataset(pd.DataFrame({"reference": ["paid with 4111 1111 1111 1111"]}), "orders")
    invalid = auditor.audit_dataset(pd.DataFrame({"reference": failing}), "orders")

    assert found(valid, "direct_identifiers") == {"payment_card": {"reference"}}
    issue = valid.issues[0]
    assert issue.evidence["matched_values"] == 1 and "**11" in issue.description
    assert "payment_card" not in found(invalid, "direct_identifiers")


def test_iban_is_found_only_with_a_valid_checksum() -> None:
    """An IBAN passing the ISO 13616 mod-97 check is reported; one altered digit is not."""
    auditor = ComplianceAuditor("GDPR")

    valid = auditor.audit_dataset(pd.DataFrame({"payee": ["DE89 3704 0044 0532 0130 00"]}), "payments")
    altered = auditor.audit_dataset(pd.DataFrame({"payee": ["DE89 3704 0044 0532 0130 01"]}), "payments")

    assert found(valid, "direct_identifiers") == {"bank_account": {"payee"}}
    assert not altered.has_issues()


def test_names_are_found_by_content_but_places_are_not() -> None:
    """A column of 'First Last' values is found by its content; city names are not names."""
    table = pd.DataFrame({
        "customer": ["Mary Johnson", "Smith, John", "Wei Chen", "Olga Petrova"],
        "place": ["Paris", "Berlin", "Austin", "Lyon"],
    })

    report = ComplianceAuditor("GDPR").audit_dataset(table, "contacts")

    assert found(report, "person_names") == {"person_name": {"customer"}}
    assert "place" not in {column for issue in report.issues for column in issue.columns}


def test_column_names_are_classified_by_their_longest_keyword() -> None:
    """Column names split into words; the longest matching keyword decides the kind."""
    kinds = {name: getattr(classify_column(name), "id", None) for name in (
        "email_address", "IPAddress", "ip_address", "firstName", "zipcode", "sex_life", "sex",
        "product_name", "name", "diagnosis_date", "last_login", "stage",
    )}

    assert kinds == {
        "email_address": "email", "IPAddress": "ip_address", "ip_address": "ip_address",
        "firstName": "person_name", "zipcode": "postal_code", "sex_life": "sexual_orientation",
        "sex": "gender", "product_name": None, "name": "person_name",
        "diagnosis_date": "event_date", "last_login": None, "stage": None,
    }


def test_k_anonymity_is_computed_over_the_whole_table() -> None:
    """k is the smallest quasi-identifier group of the whole table, even when content is sampled."""
    rows = [(30, "12345", "F")] * 6 + [(40, "12345", "M")] * 5 + [(50, "54321", "F")] * 2
    table = pd.DataFrame(rows, columns=["age", "zip", "gender"])

    strict = ComplianceAuditor("GDPR", sample_rows=3).audit_dataset(table, "people")
    lenient = ComplianceAuditor("GDPR", k_threshold=2).audit_dataset(table, "people")

    (issue,) = [issue for issue in strict.issues if issue.check_id == "k_anonymity"]
    assert issue.severity == "medium" and issue.columns == ("age", "zip", "gender")
    assert issue.evidence == {
        "quasi_identifiers": ["age", "zip", "gender"], "k": 2, "threshold": 5, "groups": 3,
        "groups_below_threshold": 1, "records_below_threshold": 2,
    }
    assert "k_anonymity" in lenient.passed_checks


def test_declared_quasi_identifiers_replace_the_detected_ones() -> None:
    """metadata['quasi_identifiers'] chooses the columns k-anonymity groups by."""
    table = pd.DataFrame({"age": [30, 31, 32, 33], "region": ["N", "N", "N", "N"]})

    report = ComplianceAuditor("GDPR", k_threshold=4).audit_dataset(
        table, "people", metadata={"quasi_identifiers": ["region"]}
    )

    (result,) = [check for check in report.checks if check.check_id == "k_anonymity"]
    assert result.passed and result.details["k"] == 4 and result.details["quasi_identifiers"] == ["region"]


def test_data_minimisation_flags_personal_columns_the_purpose_does_not_need() -> None:
    """Personal columns outside required_columns are an issue; other extra columns a warning."""
    table = pd.DataFrame({
        "email": ["a@example.com", "b@example.com"], "age": [30, 40], "plan": ["basic", "pro"],
        "city": ["Leeds", "York"], "signup_channel": ["web", "app"],
    })
    metadata = {"purpose": "churn prediction", "required_columns": ["age", "plan"]}

    report = ComplianceAuditor("GDPR").audit_dataset(table, "customers", metadata=metadata)

    (issue,) = [issue for issue in report.issues if issue.check_id == "data_minimisation"]
    assert issue.severity == "medium" and issue.article == "Art. 5(1)(c)"
    assert issue.columns == ("email", "city")
    (warning,) = [w for w in report.warnings if w.check_id == "data_minimisation"]
    assert warning.columns == ("signup_channel",)


def test_declared_metadata_passes_the_metadata_checks() -> None:
    """Purpose, legal basis, consent, retention, location and security declared: those checks pass."""
    table = pd.DataFrame({"age": [30] * 5, "plan": ["basic"] * 5})
    metadata = {
        "purpose": "churn prediction", "required_columns": ["age", "plan"], "legal_basis": "consent",
        "consent_obtained": True, "retention_period": "2 years", "data_storage_location": "eu-west-1",
        "encryption": "AES-256 at rest", "access_controls": "role-based",
    }

    report = ComplianceAuditor("GDPR").audit_dataset(table, "customers", metadata=metadata)

    assert not report.has_issues()
    assert {"purpose_limitation", "data_minimisation", "legal_basis", "consent", "retention",
            "storage_location", "security"} <= set(report.passed_checks)


def test_consent_not_obtained_is_a_high_severity_issue() -> None:
    """Relying on consent that was not obtained fails the consent check (GDPR Art. 7)."""
    table = pd.DataFrame({"email": ["a@example.com"]})

    report = ComplianceAuditor("GDPR").audit_dataset(
        table, "leads", metadata={"legal_basis": "Consent", "consent_obtained": False}
    )

    (issue,) = [issue for issue in report.issues if issue.check_id == "consent"]
    assert issue.severity == "high" and issue.article == "Art. 7(1)"
    assert "legal_basis" in report.passed_checks


def test_special_categories_need_an_article_9_condition() -> None:
    """Health data is high severity under GDPR until an Art. 9(2) condition is declared."""
    table = pd.DataFrame({"diagnosis": ["type 2 diabetes", "asthma"], "age": [50, 60]})
    auditor = ComplianceAuditor("GDPR")

    bare = auditor.audit_dataset(table, "clinic")
    declared = auditor.audit_dataset(table, "clinic", metadata={"special_category_condition": "health_care"})

    (issue,) = [issue for issue in bare.issues if issue.check_id == "special_categories"]
    assert issue.severity == "high" and issue.article == "Art. 9(1)" and issue.columns == ("diagnosis",)
    assert "special_categories" in declared.passed_checks
    assert [w.columns for w in declared.warnings if w.check_id == "special_categories"] == [("diagnosis",)]


def test_hipaa_finds_safe_harbor_identifiers() -> None:
    """HIPAA reports names, 5-digit and restricted ZIPs, exact dates and ages over 89 by letter."""
    table = pd.DataFrame({
        "patient_name": ["John Smith", "Mary Johnson", "Wei Chen"],
        "zip": ["02139", "94105", "10001"],
        "zip3": ["036", "021", "100"],
        "admission_date": pd.to_datetime(["2023-01-02", "2023-02-03", "2023-03-04"]),
        "age": [92, 45, 90],
        "notes": ["seen on 03/14/2023", "follow up", "stable"],
    })

    report = ComplianceAuditor("HIPAA").audit_dataset(table, "admissions")

    by_check = {(issue.check_id, issue.columns, issue.article) for issue in report.issues}
    letter = "45 CFR §164.514(b)(2)(i)"
    assert ("person_names", ("patient_name",), f"{letter}(A)") in by_check
    assert ("safe_harbor_geography", ("zip",), f"{letter}(B)") in by_check
    assert ("safe_harbor_geography", ("zip3",), f"{letter}(B)") in by_check
    assert ("safe_harbor_dates", ("admission_date",), f"{letter}(C)") in by_check
    assert ("safe_harbor_dates", ("notes",), f"{letter}(C)") in by_check
    (ages,) = [issue for issue in report.issues if issue.check_id == "safe_harbor_ages"]
    assert ages.description.startswith("2 records") and ages.columns == ("age",)


def test_report_and_trail_hold_no_raw_personal_values(tmp_path: Path) -> None:
    """Neither the report's JSON nor the recorded trail contains a value read from the data."""
    df = patients()

    report = ComplianceAuditor("GDPR", tmp_path / "audit_logs").audit_dataset(df, "patient_records")

    trail = json.dumps(get_audit_logs(operation_id=report.operation_id, log_dir=tmp_path / "audit_logs"))
    document = report.to_json()
    for value in [*NAMES, *EMAILS, *SSNS, *PHONES, "6789", "john.smith"]:
        assert value not in document and value not in trail
    assert "c***@example.org" in document  # the smallest e-mail, masked


def test_large_tables_are_sampled_for_content_but_counted_whole() -> None:
    """Content patterns scan at most sample_rows rows; the record count covers the whole table."""
    relation = duckdb.connect().sql(
        "SELECT 'user' || i || '@example.com' AS contact, i % 100 AS age FROM range(300000) t(i)"
    )

    report = ComplianceAuditor("GDPR", sample_rows=10_000).audit_dataset(relation, "signups")

    (issue,) = [issue for issue in report.issues if issue.check_id == "direct_identifiers"]
    assert 9_000 < int(issue.evidence["scanned_values"]) <= 10_000  # type: ignore[arg-type]
    assert issue.evidence["matched_values"] == issue.evidence["scanned_values"]
    (anonymity,) = [check for check in report.checks if check.check_id == "k_anonymity"]
    assert anonymity.passed and anonymity.details["k"] == 3_000


def test_model_audit_flags_automated_decisions_without_explanation_or_review() -> None:
    """Automated decisions need an explanation method and human review (GDPR Art. 22(3))."""
    report = ComplianceAuditor("GDPR").audit_model(
        {"automated_decision": True, "privacy_parameters": {"epsilon": 25.0}}, "credit_scorer"
    )

    components = {(issue.check_id, issue.component, issue.severity) for issue in report.issues}
    assert ("automated_decisions", "model_config['explainability']", "high") in components
    assert ("automated_decisions", "model_config['human_review']", "high") in components
    assert ("privacy_parameters", "model_config['privacy_parameters']", "medium") in components


def test_model_audit_passes_a_fully_declared_model(tmp_path: Path) -> None:
    """A model declaring every safeguard passes every check and records one event per check."""
    config = {
        "privacy_parameters": {"epsilon": 1.0, "delta": 1e-5}, "automated_decision": True,
        "explainability": "SHAP", "human_review": True, "retention_period": "3 years",
        "access_controls": ["ml-team"], "training_data_anonymized": True,
        "supports_forget_request": True, "n_estimators": 100,
    }

    report = ComplianceAuditor("GDPR", tmp_path).audit_model(config, "credit_scorer")

    assert not report.has_issues() and len(report.passed_checks) == len(report.checks) == 6
    logs = get_audit_logs(operation_id=report.operation_id, log_dir=tmp_path, event_type="compliance_check")
    assert [log["check_type"] for log in logs] == report.passed_checks


def test_pipeline_must_anonymise_before_training() -> None:
    """Training on personal sources fails unless an anonymisation step comes first."""
    source = {"name": "load_patients", "type": "source", "legal_basis": "consent"}
    train = {"name": "fit_model", "type": "training"}
    anonymise = {"name": "k_anonymise", "type": "Anonymization"}
    auditor = ComplianceAuditor("GDPR")

    unsafe = auditor.audit_pipeline([source, train, anonymise], "readmission")
    safe = auditor.audit_pipeline([source, anonymise, train], "readmission")

    (issue,) = unsafe.issues
    assert issue.check_id == "anonymisation_before_training" and issue.severity == "high"
    assert issue.component == "step 'fit_model'"
    assert not safe.has_issues()


def test_failed_audit_closes_its_trail_as_error(tmp_path: Path) -> None:
    """An audit that raises closes its trail with status 'error' and re-raises."""
    table = pd.DataFrame({"age": [30]})
    auditor = ComplianceAuditor("GDPR", tmp_path)

    with pytest.raises(InvalidArgumentError, match=r"metadata\['quasi_identifiers'\]"):
        auditor.audit_dataset(table, "people", metadata={"quasi_identifiers": ["postcode"]})

    logs = get_audit_logs(log_dir=tmp_path)
    assert [log["event_type"] for log in logs] == ["audit_started", "data_access", "audit_closed"]
    assert logs[-1]["status"] == "error" and logs[-1]["details"] == {"error_type": "InvalidArgumentError"}


def test_log_dir_from_the_environment_turns_recording_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SECUREML_AUDIT_LOG_DIR records audits as a log_dir argument would."""
    monkeypatch.setenv("SECUREML_AUDIT_LOG_DIR", str(tmp_path))

    report = ComplianceAuditor("HIPAA").audit_model({"access_controls": "role-based"}, "triage")

    logs = get_audit_logs(operation_id=report.operation_id, log_dir=tmp_path)
    events = [log["event_type"] for log in logs]
    assert events == ["audit_started"] + ["compliance_check"] * 3 + ["audit_closed"]


def test_nothing_is_recorded_without_log_dir_or_brokers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without log_dir or bootstrap_servers no trail is written, not even to a default directory."""
    monkeypatch.chdir(tmp_path)

    report = ComplianceAuditor("GDPR").audit_dataset(patients(), "patient_records")

    assert report.operation_id is None and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("call", "error", "field"), [
    (lambda: ComplianceAuditor("SOX"), InvalidArgumentError, "regulation"),
    (lambda: ComplianceAuditor("GDPR", k_threshold=1), InvalidArgumentError, "k_threshold"),
    (lambda: ComplianceAuditor().audit_dataset([{"email": "a@example.com"}], "x"),
     UnsupportedDatasetError, "dataset"),
    (lambda: ComplianceAuditor().audit_dataset(pd.DataFrame(), "x"), UnsupportedDatasetError, "at least one column"),
    (lambda: ComplianceAuditor().audit_dataset(patients(), ""), InvalidArgumentError, "dataset_name"),
    (lambda: ComplianceAuditor().audit_dataset(patients(), "p", metadata={"consent_obtained": "yes"}),
     InvalidArgumentError, r"metadata\['consent_obtained'\]"),
    (lambda: ComplianceAuditor().audit_model({"privacy_parameters": {"epsilon": -1}}, "m"),
     InvalidArgumentError, r"model_config\['privacy_parameters'\]\['epsilon'\]"),
    (lambda: ComplianceAuditor().audit_pipeline([{"name": "x", "type": "teleport"}], "p"),
     InvalidArgumentError, r"pipeline_steps\[0\]\['type'\]"),
    (lambda: ComplianceAuditor().audit_pipeline([], "p"), InvalidArgumentError, "pipeline_steps"),
])
def test_bad_arguments_raise_a_clear_error_naming_the_field(
    call: Callable[[], object], error: type[ComplianceError], field: str
) -> None:
    """Bad arguments raise a ComplianceError subclass whose message names the field."""
    with pytest.raises(error, match=field) as raised:
        call()
    assert isinstance(raised.value, ComplianceError)
