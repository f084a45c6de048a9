"""Errors of retention: bad policies and holds are validation errors; the rest are RetentionError."""

from __future__ import annotations

from secureml.audit.exceptions import AuditError


class RetentionError(AuditError, RuntimeError):
    """Retention could not be applied (the lake is left as it was, or as the message says)."""
