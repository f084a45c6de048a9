"""Helpers the retention tests share: events logged in the past, a lake holding old and new operations.

No tests here. The past is made by the trail's own clock (``secureml.audit.trail.now_micros``),
so the events are sealed and hash-chained exactly as a producer a year ago would have made them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import secureml.audit.trail as trail_module
from conftest import Harness
from secureml.audit import AuditTrail

DAY_MICROS = 86_400 * 10**6


@contextlib.contextmanager
def days_ago(monkeypatch: pytest.MonkeyPatch, days: int) -> Iterator[None]:
    """Trails opened and logged inside this block stamp their events ``days`` days in the past."""
    real = trail_module.now_micros
    monkeypatch.setattr(trail_module, "now_micros", lambda: real() - days * DAY_MICROS)
    try:
        yield
    finally:
        monkeypatch.setattr(trail_module, "now_micros", real)


@dataclass
class Logged:
    """The operations of a mixed lake: a year-old one, an old one under hold-worthy names, a fresh one."""

    old: str  # 400 days old: audit_started, 4 model_inference, compliance_check, audit_closed
    old_subject: str  # 400 days old, user "ana", a user_request for data subject "subject-7"
    fresh: str  # today: audit_started, model_inference, audit_closed


def log_mixed(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> Logged:
    """Log the operations of ``Logged`` through the harness's transport (not materialised yet)."""
    options = harness.options()
    with days_ago(monkeypatch, 400):
        old = AuditTrail("scoring", regulations=["GDPR"], user="svc", **options)
        for i in range(4):
            old.log_model_inference("credit_v1", f"application-{i}", "low_risk", 0.9)
        old.log_compliance_check("consent", "GDPR", True, {"checked": 4})
        old.close()
        subject = AuditTrail("requests", regulations=["GDPR"], user="ana", **options)
        subject.log_model_inference("credit_v1", "application-x", "high_risk", 0.7)
        subject.log_user_request("access", "subject-7", None, "completed")
        subject.close()
    fresh = AuditTrail("scoring", user="svc", **options)
    fresh.log_model_inference("credit_v1", "application-new", "low_risk", 0.8)
    fresh.close()
    return Logged(old.operation_id, subject.operation_id, fresh.operation_id)
