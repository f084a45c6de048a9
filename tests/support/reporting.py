"""Helpers shared by the reporting tests (this module holds no tests).

Events are recorded with the real AuditTrail into a real embedded log; only the clock that
stamps them is set, so periods and deadlines can be checked at known times.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfReader

from secureml.audit import AuditTrail, audit_function

T0 = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)
SECRET_ARGUMENT = "SECRET-ARGUMENT-VALUE-42"
SECRET_OUTPUT = "SECRET-MODEL-OUTPUT"
SUBJECT = "user_12345"


class EventClock:
    """The time AuditTrail stamps on events (patches secureml.audit.trail.now_micros)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, start: datetime = T0) -> None:
        """Start at start and take over the trail's clock for the test."""
        self.moment = start
        monkeypatch.setattr("secureml.audit.trail.now_micros", self.micros)

    def micros(self) -> int:
        """The current fake time in microseconds since the epoch."""
        return int((self.moment - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))

    def at(self, moment: datetime) -> EventClock:
        """Move the clock to moment."""
        self.moment = moment
        return self

    def advance(self, **delta: float) -> EventClock:
        """Move the clock forward."""
        self.moment += timedelta(**delta)
        return self


def record_sample(log_dir: Path, clock: EventClock) -> None:
    """A known mix of every event type over one hour from T0, in two operations.

    Three data accesses (6,250 records, one without purpose), five inferences, four checks
    (one failed), two data-subject requests (one open since 2024-01-02, one completed), one
    error, and a decorated call whose argument value is recorded but must never be printed.
    """
    clock.at(T0)
    audit = AuditTrail(operation_name="credit_risk_model_training", log_dir=log_dir, regulations=["GDPR", "CCPA"],
                       context={"app_version": "1.0.0"})
    clock.advance(minutes=1)
    audit.log_data_access("customer_financial_data", ["income", "credit_score"], 5000, "model_training",
                          user="analyst_123")
    audit.log_data_access("customer_financial_data", ["income"], 1000, None, user="analyst_123")
    audit.log_data_access("loan_history", ["loan_id"], 250, "scoring", user="analyst_456")
    clock.advance(minutes=5)
    audit.log_data_transformation("anonymization", "raw_customer_data", "anonymized_customer_data", {"k": 5})
    audit.log_model_training("random_forest", "customer_data_anonymized", {"n_estimators": 100},
                             {"accuracy": 0.92}, {"epsilon": 1.0})
    clock.advance(minutes=5)
    for confidence in (0.85, 0.9, 0.55, 0.7, 0.95):
        audit.log_model_inference("credit_risk_classifier_v1", "application", SECRET_OUTPUT, confidence)
    audit.log_compliance_check("data_minimization", "GDPR", True, {"columns_after": 10})
    audit.log_compliance_check("consent", "GDPR", False, {"reason": "no consent record"})
    audit.log_compliance_check("opt_out", "CCPA", True, {})
    audit.log_compliance_check("retention", "CCPA", True, {})
    clock.advance(minutes=5)
    audit.log_user_request("data_access_request", SUBJECT, {"request_date": "2024-01-02"}, "received")
    audit.log_user_request("deletion_request", "subject_98765", {}, "received")
    clock.advance(minutes=10)
    audit.log_user_request("deletion_request", "subject_98765", {}, "completed")
    audit.log_error("ValueError", "bad row 17")
    audit.close(status="completed")

    @audit_function(operation_name="data_preprocessing", log_dir=log_dir, regulations=["GDPR"],
                    record_values=("token",))
    def preprocess(token: str) -> int:
        """A decorated function whose argument value the trail records."""
        return len(token)

    clock.advance(minutes=10)
    preprocess(SECRET_ARGUMENT)


def make_logo(path: Path, size: tuple[int, int] = (240, 80)) -> Path:
    """A small PNG logo of the given pixel size."""
    image = Image.new("RGB", size, (11, 61, 145))
    image.paste((230, 159, 0), (size[0] // 3, size[1] // 4, 2 * size[0] // 3, 3 * size[1] // 4))
    image.save(path)
    return path


def pdf_text(path: Path) -> str:
    """All text of a PDF, pages joined."""
    return "\n".join(page.extract_text() for page in PdfReader(path).pages)


def fact(text: str, label: str) -> int:
    """The number printed after a summary label, e.g. fact(text, 'Total events') -> 1234."""
    match = re.search(rf"^\s*{re.escape(label)}\s*\n?\s*([\d,]+)\s*$", text, re.MULTILINE)
    assert match, f"{label!r} not found in the report text"
    return int(match.group(1).replace(",", ""))
