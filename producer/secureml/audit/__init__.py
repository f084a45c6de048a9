"""Audit trails for privacy-relevant ML work: recorded in order, attributable, tamper-evident.

    from secureml.audit import AuditTrail, audit_function, get_audit_logs

Importing this package loads only the exceptions; ``AuditTrail`` and ``audit_function`` (the
producer side, what a model server needs) are imported on first use, and so are the readers
(``get_audit_logs``, ``connect``, ``count_events``) and ``verify``, which live with the consumers.
"""

from __future__ import annotations

import importlib
from typing import Any

from secureml.audit.exceptions import (
    AuditClosedError,
    AuditConfigError,
    AuditDeliveryError,
    AuditError,
    AuditTransportError,
    AuditValidationError,
    LakeError,
)
from secureml.audit.version import __version__

# name -> module that defines it: loaded on first access, so a model server never pays for the
# readers, and a command line tool importing an exception pays for nothing else.
_LAZY = {
    "AuditTrail": "secureml.audit.trail",
    "audit_function": "secureml.audit.decorator",
    "DeliveryReport": "secureml.audit.transports.base",
    "get_audit_logs": "secureml.query",
    "connect": "secureml.query",
    "count_events": "secureml.query",
    "verify": "secureml.integrity",
    "VerificationResult": "secureml.integrity",
    "PrivacyPolicy": "secureml.audit.privacy",
    "erase_subject": "secureml.audit.privacy.erase",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
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
    "PrivacyPolicy",
    "VerificationResult",
    "__version__",
    "audit_function",
    "connect",
    "count_events",
    "erase_subject",
    "get_audit_logs",
    "verify",
]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
