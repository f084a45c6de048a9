"""Audit trails for privacy-relevant ML work: recorded in order, attributable, tamper-evident.

    from secureml.audit import AuditTrail, audit_function, get_audit_logs
"""

from __future__ import annotations

from secureml.audit.decorator import audit_function
from secureml.audit.exceptions import (
    AuditClosedError,
    AuditConfigError,
    AuditDeliveryError,
    AuditError,
    AuditTransportError,
    AuditValidationError,
    LakeError,
)
from secureml.audit.integrity import VerificationResult, verify
from secureml.audit.query import connect, count_events, get_audit_logs
from secureml.audit.trail import AuditTrail
from secureml.audit.transports.base import DeliveryReport
from secureml.audit.version import __version__

__all__ = [
    "AuditClosedError",
    "AuditConfigError",
    "AuditDeliveryError",
    "AuditError",
    "AuditTrail",
    "AuditTransportError",
    "AuditValidationError",
    "DeliveryReport",
    "LakeError",
    "VerificationResult",
    "__version__",
    "audit_function",
    "connect",
    "count_events",
    "get_audit_logs",
    "verify",
]
