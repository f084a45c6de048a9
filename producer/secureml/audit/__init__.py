"""Audit trails for privacy-relevant ML work: recorded in order, attributable, tamper-evident.

    from secureml.audit import AuditTrail, audit_function, get_audit_logs

Importing this package loads only the producer side (what a model server needs). The
readers (``get_audit_logs``, ``connect``, ``count_events``) and ``verify`` live with the
consumers and are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

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
from secureml.audit.trail import AuditTrail
from secureml.audit.transports.base import DeliveryReport
from secureml.audit.version import __version__

# name -> module that defines it: loaded on first access, so a model server never pays for them.
_READERS = {
    "get_audit_logs": "secureml.query",
    "connect": "secureml.query",
    "count_events": "secureml.query",
    "verify": "secureml.integrity",
    "VerificationResult": "secureml.integrity",
}


def __getattr__(name: str) -> Any:
    module = _READERS.get(name)
    if module is None:
        raise AttributeError(f"module 'secureml.audit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
